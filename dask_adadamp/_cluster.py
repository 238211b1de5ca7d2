"""The cluster a fit runs on: which client, whether its workers have the
device, its size while the batch grows (:class:`Scaler`), and the worker
thread a fit run by a task gives up meanwhile."""
import atexit
import logging
import os
from contextlib import contextmanager

import torch
from distributed import Client, LocalCluster, get_worker, rejoin, secede

from . import _worker as worker
from ._scaler import Scaler  # noqa: F401 (cluster.Scaler)

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
