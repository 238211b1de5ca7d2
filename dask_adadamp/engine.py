"""The Dask side of one fit: shards, gradient tasks, reduction, clean-up.

A :class:`FitSession` places the training data on the cluster once, as
*shards* (tasks holding rows of numpy data, or the row blocks of a dask
array, persisted where they are), then turns each model update into one task
per chunk and adds the returned sums in chunk order. Everything it puts on
the cluster carries the fit's token in its key and is released by
:meth:`FitSession.close`.

Why tasks and not actors: a task whose worker dies is re-run elsewhere by
the scheduler, and the shards it reads are tasks whose graph holds the data,
so the scheduler re-creates a lost shard by itself. Both properties come
from Dask for free and keep every update exact; docs/performance.md has
what they cost.
"""
import atexit
import logging
import math
import os
import uuid
import warnings
from contextlib import contextmanager
from typing import NamedTuple

import dask.array as da
import numpy as np
import torch
from dask.core import flatten
from distributed import Client, LocalCluster, futures_of, get_worker, rejoin, secede

from . import worker

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
    searches) submits its own tasks and waits for them. Holding a worker
    thread meanwhile can leave none to run them: with one thread per
    worker and one such fit per worker, nothing would ever run. This is
    what :func:`distributed.worker_client` does; outside a task it does
    nothing.
    """
    try:
        get_worker()
    except ValueError:
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


def default_shard_rows(n_rows, grads_per_worker, max_shards=64):
    """Rows per shard for data the fit places itself.

    A multiple of ``grads_per_worker``, so that an update of ``B`` examples
    needs ``ceil(B / grads_per_worker)`` tasks (one more where it straddles
    a shard's end), and at most about ``max_shards`` shards, so that there
    are shards for every worker without tiny tasks.

    >>> default_shard_rows(1000, 128)
    128
    >>> default_shard_rows(100_000, 128)
    1664
    """
    chunks_per_shard = math.ceil(n_rows / (max_shards * grads_per_worker))
    return grads_per_worker * max(1, chunks_per_shard)


class FitSession:
    """Training data on the cluster and the tasks of each update.

    Parameters
    ----------
    client : distributed.Client
    X, y : numpy.ndarray or dask.array.Array
        Training data. Numpy arrays are shuffled with ``seed`` and cut into
        shards of ``shard_rows`` rows; a dask array keeps its own row
        blocks, which are persisted where they are.
    spec : worker.ModelSpec
        The model the workers compute with.
    shard_rows : int
        Rows per shard for numpy input.
    seed : int
        Seeds the order in which numpy rows are dealt into shards.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from distributed import Client, LocalCluster
    >>> from torch.nn.utils import parameters_to_vector
    >>> from dask_adadamp.worker import ModelSpec
    >>> from dask_adadamp.sampling import EpochSampler
    >>> cluster = LocalCluster(n_workers=1, processes=False,
    ...                        dashboard_address=':0')
    >>> client = Client(cluster)
    >>> module = torch.nn.Linear(2, 1)
    >>> X = np.ones((8, 2), "float32"); y = np.zeros((8, 1), "float32")
    >>> spec = ModelSpec("doc", module, torch.nn.MSELoss(), "cpu")
    >>> with FitSession(client, X, y, spec, shard_rows=4, seed=0) as fit:
    ...     update = EpochSampler(fit.shard_ids, 4,
    ...                           np.random.default_rng(0)).take(8)
    ...     w = parameters_to_vector(module.parameters()).detach().numpy()
    ...     sums = fit.gradient(w, {}, update, seed=0)
    ...     loss = fit.mean_loss(w, {})
    >>> sums.count, sums.chunk_sizes
    (8, [4, 4])
    >>> bool(abs(sums.loss / sums.count - loss) < 1e-6)
    True
    >>> client.close(); cluster.close()
    """

    def __init__(self, client, X, y, spec, shard_rows, seed):
        self.client = client
        self.spec = spec
        self.token = spec.token
        self._calls = 0
        self._generation = 0
        self._shards = []
        self._holders = []
        self._workers = []
        self.X = None
        try:
            self._place(X, y, shard_rows, seed)
        except BaseException:
            self.close()
            raise

    def _place(self, X, y, shard_rows, seed):
        if isinstance(X, da.Array):
            self._place_dask(X, y)
        else:
            self._place_numpy(X, y, shard_rows, seed)

    def _place_numpy(self, X, y, shard_rows, seed):
        """Deal shuffled rows into shards, shard ``i`` onto worker ``i mod P``.

        The sampler takes consecutive shards for consecutive chunks, so
        this placement spreads every update over all workers. Each shard is
        a task holding its rows: if its worker dies, the scheduler re-creates
        it elsewhere (the restriction is loose).
        """
        order = np.random.default_rng([seed, 1]).permutation(len(X))
        self.shard_ids = [order[i:i + shard_rows]
                          for i in range(0, len(order), shard_rows)]
        workers = sorted(self.client.nthreads())
        with warnings.catch_warnings():
            # Data in the graph is the point: it lets the scheduler re-create
            # a shard whose worker died.
            warnings.filterwarnings("ignore", "Sending large graph")
            self._shards = [self._put(i, X[rows], y[rows], workers)
                            for i, rows in enumerate(self.shard_ids)]
        self._workers = workers
        self._holders = [workers[i % len(workers)] if workers else None
                         for i in range(len(self._shards))]

    def _put(self, i, X, y, workers):
        """Shard ``i`` as tasks on ``workers[i mod P]`` (a loose restriction:
        if that worker dies, the scheduler runs them elsewhere)."""
        where = ({"workers": [workers[i % len(workers)]], "allow_other_workers": True}
                 if workers else {})
        self._generation += 1
        return tuple(
            self.client.submit(worker.identity, data,
                               key=(f"adadamp-shard-{name}-{self.token}", i,
                                    self._generation), **where)
            for name, data in (("X", X), ("y", y)))

    def follow(self, workers):
        """Spread the shards over ``workers`` (addresses), shard ``i`` on
        worker ``i mod P``, moving only those that are elsewhere.

        A moved shard is a new task reading the old one, so its data goes
        from worker to worker, and a lost copy can still be re-created.
        """
        workers = sorted(workers)
        if not workers or workers == self._workers:
            return
        for i, (X, y) in enumerate(self._shards):
            target = workers[i % len(workers)]
            if self._holders[i] != target:
                self._shards[i] = self._put(i, X, y, workers)
                self._holders[i] = target
        self._workers = workers

    def _place_dask(self, X, y):
        """Persist the arrays' row blocks where they are; each is a shard."""
        X = X.rechunk({axis: -1 for axis in range(1, X.ndim)})
        if any(math.isnan(c) for c in X.chunks[0]):
            X = X.compute_chunk_sizes()
        y = da.asarray(y).rechunk(
            (X.chunks[0],) + tuple((s,) for s in y.shape[1:]))
        bounds = np.cumsum((0,) + X.chunks[0])
        self.shard_ids = [np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:])
                          if b > a]
        X, y = self.client.persist([X, y])
        by_key = {f.key: f for f in futures_of(X) + futures_of(y)}
        keys_X = list(flatten(X.__dask_keys__()))
        keys_y = list(flatten(y.__dask_keys__()))
        self._shards = [(by_key[kx], by_key[ky])
                        for kx, ky, n in zip(keys_X, keys_y, X.chunks[0]) if n]
        self.X = X
        # The blocks stay where the user's cluster put them until the set of
        # workers changes (then follow() spreads them like numpy shards).
        where = self.client.who_has([X for X, _ in self._shards])
        self._holders = [min(where.get(X.key) or (None,)) for X, _ in self._shards]
        self._workers = sorted(self.client.nthreads())

    def check_finite(self):
        """Raise ValueError if the placed X holds NaN or infinity."""
        if self.X is not None and not bool(da.isfinite(self.X).all().compute()):
            raise ValueError("X contains NaN or infinite values; "
                             "only finite numbers are accepted")

    def gradient(self, weights, buffers, update, seed):
        """Sum of gradients, sum of losses and count for one update.

        Parameters
        ----------
        weights : numpy.ndarray
            Flat float32 weights.
        buffers : dict of str to numpy.ndarray
            The module's buffers, or ``{}``.
        update : sampling.Update
        seed : int or sequence of int
            Seeds the update's tasks (each chunk gets its own stream), so
            that a task computes the same wherever and whenever it runs.

        Returns
        -------
        GradientSums
        """
        self._calls += 1
        name = f"adadamp-gradient-{self.token}"
        seeds = np.random.SeedSequence(seed).generate_state(len(update.chunks))
        # The weights go inside each task rather than in a key of their own:
        # then a chunk's only dependency is its shard, so the scheduler runs
        # it where the shard lives (a weights key on another worker would pull
        # the shard over). Measured the same cost either way at 2 tasks.
        results = self._run(name, [
            (worker.chunk_gradient,
             (self.spec, weights, buffers, *self._shards[chunk.shard], chunk.rows,
              int(s)),
             {"return_buffers": j == 0 and bool(buffers)})
            for j, (chunk, s) in enumerate(zip(update.chunks, seeds))])
        # Added in chunk order, never in order of arrival: the sum's bits
        # do not depend on which worker finished first.
        grad = results[0][0].copy()
        for r in results[1:]:
            grad += r[0]
        return GradientSums(
            grad=grad, loss=math.fsum(r[1] for r in results),
            count=sum(r[2] for r in results),
            buffers=results[0][4] if buffers else {},
            chunk_sizes=[r[2] for r in results],
            chunk_sq_norms=[r[3] for r in results])

    def mean_loss(self, weights, buffers, rows=None):
        """Mean training loss at ``weights``, forward only: one task per
        worker, over the shards that worker holds.

        Parameters
        ----------
        weights, buffers
            As for :meth:`gradient`.
        rows : list of numpy.ndarray or None
            The rows of each shard to evaluate, or all of them.

        Returns
        -------
        float
        """
        self._calls += 1
        rows = rows or [np.arange(len(ids)) for ids in self.shard_ids]
        # Grouped by the worker each shard was placed on, so that no shard
        # moves and an evaluation costs one round of P tasks, not one per shard.
        groups = {}
        for shard, holder, r in zip(self._shards, self._holders, rows):
            if len(r):
                groups.setdefault(str(holder), []).append((shard, r))
        results = self._run(f"adadamp-loss-{self.token}", [
            (worker.shards_loss, (self.spec, weights, buffers,
                                  [s for s, _ in group], [r for _, r in group]), {})
            for _, group in sorted(groups.items())])
        # fsum rounds exactly once: the same mean however shards were grouped.
        return (math.fsum(x for sums in results for x in sums)
                / sum(len(r) for r in rows))

    def _run(self, name, tasks):
        """Submit ``(func, args, kwargs)`` tasks keyed ``(name, call, j)``,
        gather their results in order."""
        with warnings.catch_warnings():
            # Large models make large tasks: by design, not by accident.
            warnings.filterwarnings("ignore", "Sending large graph")
            futures = [self.client.submit(func, *args, **kwargs,
                                          key=(name, self._calls, j))
                       for j, (func, args, kwargs) in enumerate(tasks)]
        try:
            return self.client.gather(futures)
        except BaseException:
            try:
                self.client.cancel(futures)  # nothing of a failed update runs on
            except Exception:  # the client closed: the original error matters
                logger.debug("could not cancel %s", name, exc_info=True)
            raise

    @property
    def n_rows(self):
        """Training examples placed on the cluster."""
        return sum(len(ids) for ids in self.shard_ids)

    @property
    def n_workers(self):
        """Workers in the cluster now."""
        return len(self.client.nthreads())

    def workers_used(self, update):
        """How many workers hold the shards an update reads (its tasks run
        where their shard is)."""
        return len({self._holders[chunk.shard] for chunk in update.chunks})

    def close(self):
        """Release everything this fit placed on the cluster.

        Shards are released by dropping the fit's references, never by
        cancelling: a persisted dask array the user passed shares its keys
        with the shards and must outlive the fit.
        """
        self._shards, self.X = [], None
        try:
            self.client.run(worker.forget, self.token)
        except Exception:  # a closed client or a cluster gone: nothing left
            logger.debug("could not clear worker caches", exc_info=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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
                f"{len(client.nthreads())} workers that exist", UserWarning, stacklevel=3)
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


class GradientSums(NamedTuple):
    """What the tasks of one update return, added up.

    ``grad`` and ``loss`` are sums over the update's ``count`` examples;
    ``buffers`` are the module's buffers after the first chunk (or ``{}``);
    chunk ``j`` had ``chunk_sizes[j]`` examples and a mean gradient of
    squared norm ``chunk_sq_norms[j]``.
    """

    grad: np.ndarray
    loss: float
    count: int
    buffers: dict
    chunk_sizes: list
    chunk_sq_norms: list


def new_token():
    """A fresh name for one fit's keys on the cluster."""
    return uuid.uuid4().hex[:12]
