"""What a fit changes in the client's process: torch's and BLAS's threads,
the global random generator while a module is initialized, and the
device the client keeps its copy of the module on."""
import threading
from contextlib import contextmanager

import dask
import torch


@contextmanager
def client_threads():
    """Run the client's share of the training updates on
    ``adadamp.client-threads`` torch threads (dask config; default 1; None
    leaves torch's setting).

    The client's work per update (flattening the weights, the optimizer
    step) is a few passes over the weights, which gain little from threads.
    Where the client shares cores with workers, a parallel region waits for
    a thread the OS gave to a worker, and an idle BLAS thread spins
    (``benchmarks/client_threads.py``: 33.7 against 26.4 ms per update on 2
    cores with 2 workers). Validation and prediction keep the process's
    settings.

    >>> before = torch.get_num_threads()
    >>> with client_threads():
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    from threadpoolctl import threadpool_limits

    threads = dask.config.get("adadamp.client-threads")
    if threads is None:
        yield
        return
    # Process-wide settings: fits running at once in threads share one
    # change, made by the first to start and undone by the last to end.
    with _THREADS_LOCK:
        if _THREADS["fits"] == 0:
            _THREADS["torch"] = torch.get_num_threads()
            torch.set_num_threads(int(threads))
            # numpy's BLAS too: after a call (the gradient's norm is a dot
            # product), OpenBLAS's idle threads spin; measured on 2 cores,
            # one of them used 76% of a core for the whole fit, and an
            # update took 31.6 ms instead of 23.9.
            _THREADS["blas"] = threadpool_limits(limits=int(threads))
        _THREADS["fits"] += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _THREADS["fits"] -= 1
            if _THREADS["fits"] == 0:
                _THREADS.pop("blas").restore_original_limits()
                torch.set_num_threads(_THREADS.pop("torch"))


_THREADS_LOCK = threading.Lock()
_THREADS = {"fits": 0}
SEEDED_INIT = threading.RLock()


@contextmanager
def seeded(seed, enabled=True):
    """torch's global generator seeded with ``seed`` within the block, and
    as it was after it (``enabled`` False: left alone).

    The generator is the process's: blocks in threads take turns
    (``SEEDED_INIT``), or one fit's seed would initialize another's module,
    and ``fork_rng``'s restore at the end of one block would undo the
    seeding of another's.

    >>> with seeded(0):
    ...     a = torch.rand(1)
    >>> with seeded(0):
    ...     bool(torch.equal(a, torch.rand(1)))
    True
    """
    with SEEDED_INIT, torch.random.fork_rng(devices=[], enabled=enabled):
        if enabled:
            torch.manual_seed(seed)
        yield


def local_device(device):
    """``device`` if this process has it, else ``"cpu"``.

    >>> local_device("cpu"), local_device(None)
    ('cpu', None)
    """
    if device is None or device == "cpu":
        return device
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        return device  # not torch's: the modules' .to() decides, as in skorch
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": torch.backends.mps.is_available()}
    return device if available.get(kind, False) else "cpu"
