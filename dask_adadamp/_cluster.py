"""The cluster a fit runs on: which client, whether its workers have the
device, its size while the batch grows (:class:`Scaler`), and the worker
thread a fit run by a task gives up meanwhile."""
import atexit
import logging
import math
import os
import warnings
from contextlib import contextmanager

import torch
from distributed import Client, LocalCluster, get_worker, rejoin, secede

from . import _worker as worker
from .exceptions import NoClusterManagerWarning

logger = logging.getLogger(__name__)

_EMBEDDED = {}


def resolve_client(client=None):
    """The client a fit uses.

    Parameters
    ----------
    client : distributed.Client, str or None
        A client, or a scheduler address to connect to. With None, the
        current client (:func:`distributed.get_client` semantics) or, when
        there is none, an embedded :class:`~distributed.LocalCluster` that
        is started once per process and reused by later fits.

    Returns
    -------
    distributed.Client
    """
    if isinstance(client, Client):
        return client
    if isinstance(client, str):
        if client not in _EMBEDDED:
            _EMBEDDED[client] = Client(client, set_as_default=False)
        return _EMBEDDED[client]
    if client is not None:
        raise TypeError(
            f"client={client!r} is not accepted; pass a distributed.Client, "
            "a scheduler address such as 'tcp://10.0.0.1:8786', or None")
    try:
        from distributed import get_client
        return get_client()
    except ValueError:
        pass
    if None not in _EMBEDDED:
        # One single-threaded worker per core: torch already parallelizes
        # inside a task, and one thread per worker keeps results exact.
        cluster = LocalCluster(n_workers=os.cpu_count() or 1,
                               threads_per_worker=1, processes=True,
                               dashboard_address=":8787",
                               silence_logs=logging.ERROR)
        embedded = Client(cluster)
        _EMBEDDED[None] = embedded
        atexit.register(_close_embedded)
        logger.warning("dask-adadamp started a local Dask cluster with %d "
                       "workers; dashboard at %s", len(cluster.workers),
                       embedded.dashboard_link)
    return _EMBEDDED[None]


def _close_embedded():
    for client in _EMBEDDED.values():
        cluster = client.cluster
        client.close()
        if cluster is not None:
            cluster.close()
    _EMBEDDED.clear()


@contextmanager
def seceded():
    """Give up the worker thread while a fit runs inside a Dask task.

    A fit run by a task (joblib's Dask backend, dask-ml's incremental
    searches) waits for its workers' computations, which run in the
    workers' thread pools. Holding a worker
    thread meanwhile can leave none to run them: with one thread per
    worker and one such fit per worker, nothing would ever run. This is
    what :func:`distributed.worker_client` does; outside a task it does
    nothing.
    """
    try:
        get_worker()
    except ValueError:
        in_task = False
    else:
        in_task = True
    if not in_task:  # outside the except: the fit's errors chain to nothing
        yield
        return
    secede()
    try:
        yield
    finally:
        rejoin()


def check_device(client, device):
    """Raise ValueError unless every worker can compute on ``device``."""
    if torch.device(device).type == "cpu":
        return
    found = client.run(worker.has_device, str(device))
    missing = sorted(addr for addr, ok in found.items() if not ok)
    if missing or not found:
        raise ValueError(
            f"device={device!r} is not available on the workers "
            f"{missing or '(there are none)'}; use device='cpu', or workers "
            "with that device (e.g. dask_cuda.LocalCUDACluster for 'cuda')")


class Scaler:
    """Hold a cluster at the number of workers an update's batch asks for.

    ``request(B)`` asks the cluster manager behind the client
    (``client.cluster``: LocalCluster, dask-jobqueue, dask-kubernetes,
    anything with ``.scale``) for ``clip(ceil(B / grads_per_worker),
    min_workers, max_workers)`` workers. It does not wait for them: the
    fit trains on the workers it has and spreads its shards to new ones as
    they arrive (:meth:`FitSession.follow`). Workers are retired before the
    cluster closes them, so that their data moves first. ``close()`` gives
    the cluster back at the size it was found.

    Parameters
    ----------
    client : distributed.Client
    grads_per_worker : int
    min_workers, max_workers : int or None
    """

    def __init__(self, client, grads_per_worker, min_workers=None, max_workers=None):
        self.client = client
        self.grads_per_worker = grads_per_worker
        self.low = min_workers or 1
        self.high = max_workers or math.inf
        self.cluster = getattr(client, "cluster", None)
        self.target = self._seen = None
        if self.cluster is None or not hasattr(self.cluster, "scale"):
            warnings.warn(
                "min_workers/max_workers need a cluster manager behind the client "
                "(client.cluster), and this client has none; training on the "
                f"{len(client.nthreads())} workers that exist", NoClusterManagerWarning,
                stacklevel=3)
            self.cluster = None
            self.found = None
        else:
            self.found = self._size()

    def _size(self):
        spec = getattr(self.cluster, "worker_spec", None)
        return len(spec) if spec is not None else len(self.client.nthreads())

    def request(self, batch_size):
        """Ask for the workers ``batch_size`` needs; True if that changed."""
        target = max(self.low, min(self.high, math.ceil(batch_size / self.grads_per_worker)))
        if self.cluster is None or target == self.target:
            return False
        self._scale(target)
        self.target = target
        return True

    def _scale(self, n):
        spec = getattr(self.cluster, "worker_spec", None)
        if spec is not None and n < len(spec):
            # SpecCluster.scale closes its newest workers without retiring
            # them (their data would be lost): retire those first.
            self.client.retire_workers(names=list(spec)[n:], close_workers=False)
        self.cluster.scale(n)

    def arrivals(self):
        """The workers there are now, while the cluster is not yet at the
        size asked for (one call to the scheduler); else None."""
        if self.cluster is None or self.target is None or self._seen == self.target:
            return None
        workers = list(self.client.scheduler_info()["workers"])
        self._seen = len(workers)
        return workers

    def close(self):
        """Give the cluster back at the size it was found."""
        if self.cluster is not None and self.target is not None:
            try:
                self._scale(self.found)
            except Exception:  # never hide the error that ended the fit
                logger.warning("could not scale the cluster back to %d workers",
                               self.found, exc_info=True)
