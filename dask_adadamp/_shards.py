"""A fit's training data on the cluster: placement, moves and recovery.

The data moves once. Numpy rows are shuffled, cut into shards and sent from
the client straight to the workers (``scatter``, never through the
scheduler); a dask array's row blocks are persisted where they are. Each
shard is a pair of Dask keys (X and y) named after the fit, so the
scheduler knows where every shard is and the task stream shows placement
(``adadamp-shard-X``/``-y`` tasks). The client remembers each shard's
*holder*, the worker its update calls go to.

When a worker dies or leaves, :meth:`Shards.recover` finds the shards that
were there and puts them back on live workers: a numpy shard from the
client's own copy of the rows, a dask-array block by letting the scheduler
recompute it from its graph. With no worker at all it waits for new ones
up to a timeout, then raises.

Which workers are live comes from the scheduler's own events
(:mod:`dask_adadamp._membership`), less those this fit saw fail or stall: a
departed worker is never called, or sent rows, again. Placement survives a
worker dying under it as updates do: the shards that did not arrive are
sent again to live workers. The tasks carry :func:`toolz.identity`, so the
scheduler needs neither torch nor this library to read them.
"""
import asyncio
import logging
import math
import time
from collections import defaultdict

import dask
import dask.array as da
import numpy as np
from dask.core import flatten
from dask.graph_manipulation import clone
from distributed import futures_of, wait
from distributed.client import FuturesCancelledError
from toolz import identity

from .exceptions import DataLostError, NoWorkersError

logger = logging.getLogger(__name__)

# Rows gathered on the client before they are sent: the copies placement
# makes (a shard's rows are not contiguous in X) stay this small.
SCATTER_BYTES = 64 * 2**20
# Seconds a scatter waits for its target to be running before the target
# counts as lost for the fit.
SCATTER_WAIT_S = 5
# What a worker dying under a placement looks like to the client.
PLACEMENT_ERRORS = (OSError, TimeoutError, asyncio.TimeoutError,
                    asyncio.CancelledError, FuturesCancelledError)


def recover_timeout():
    """The ``adadamp.recover-timeout`` dask config value, in seconds.

    >>> import dask
    >>> with dask.config.set({"adadamp.recover-timeout": 5}):
    ...     recover_timeout()
    5.0
    """
    return float(dask.config.get("adadamp.recover-timeout"))


def _unknown(a):
    return any(math.isnan(c) for c in a.chunks[0])


class Shards:
    """Where one fit's shards are, and how to put them back.

    Parameters
    ----------
    client : distributed.Client
    token : str
        The fit's name; every key placed carries it.
    members : dask_adadamp._membership.Membership or None
        The scheduler's workers, from its events; None asks the scheduler
        (``client.nthreads()``) each time.

    Attributes
    ----------
    ids : list of numpy.ndarray
        For each shard, the global example number of each of its rows.
    holders : list of str
        For each shard, the address of the worker that holds it.
    """

    def __init__(self, client, token, members=None):
        self.client = client
        self.token = token
        self.members = members
        self.ids = []
        self.holders = []
        self.workers = []
        self._futures = []
        self._source = None
        self._generation = 0
        self._dead = set()
        # Workers that held shards of the fit at some point, and those of them
        # already in an update's history as lost (once each).
        self.used, self.reported = set(), set()
        # Whether placement failed and was made again (its errors' frames
        # hold futures in reference cycles: FitSession.close collects them).
        self.retried = False
        self.X = self._y = None
        # The rechunked arrays before persist and each shard's block: a block
        # on a worker that stalled is recomputed from them elsewhere.
        self._graph = self._blocks = None

    # --- placement --------------------------------------------------------

    def place_numpy(self, X, y, shard_rows, seed):
        """Deal shuffled rows into shards, shard ``i`` onto worker ``i mod P``.

        The sampler takes consecutive shards for consecutive chunks, so this
        placement spreads every update over all workers. The client keeps
        ``X`` and ``y`` (the arrays the fit was given) to re-place a shard
        whose worker died.
        """
        order = np.random.default_rng([seed, 1]).permutation(len(X))
        self.ids = [order[i:i + shard_rows] for i in range(0, len(order), shard_rows)]
        self._source = (X, y)
        self._futures = [None] * len(self.ids)
        self.holders = [None] * len(self.ids)
        self.workers = self.live_workers(wait=True)
        self._place(range(len(self.ids)))

    def place_dask(self, X, y):
        """Persist the arrays' row blocks where they are; each is a shard.

        Blocks of unknown size (after boolean indexing, say) are measured
        once they are in memory, so the user's graph runs once.
        """
        X = X.rechunk({axis: -1 for axis in range(1, X.ndim)})
        y = da.asarray(y)
        y = y.rechunk({axis: -1 for axis in range(1, y.ndim)})
        if not _unknown(X) and not _unknown(y):
            y = y.rechunk((X.chunks[0],) + y.chunks[1:])
        self._graph = [X, y]
        self.X, self._y = self.client.persist([X, y])
        self.workers = self.live_workers(wait=True)
        # No timeout: computing the user's blocks may take as long as it takes.
        futures = futures_of(self.X) + futures_of(self._y)
        wait(futures)
        for f in futures:
            if f.status == "error":
                f.result()  # the user's graph failed: its own error, raised here
        if _unknown(self.X) or _unknown(self._y):
            self.X = self.X.compute_chunk_sizes()
            self._y = self._y.compute_chunk_sizes()
            if self.X.shape[0] != self._y.shape[0]:
                raise ValueError(
                    f"X has {self.X.shape[0]} rows but y has {self._y.shape[0]}; "
                    "they must have the same length")
            if self._y.chunks[0] != self.X.chunks[0]:
                self._graph[1] = self._y.rechunk((self.X.chunks[0],) + self._y.chunks[1:])
                self._y = self.client.persist(self._graph[1])
                wait(futures_of(self._y))
        X, y = self.X, self._y
        bounds = np.cumsum((0,) + X.chunks[0])
        self.ids = [np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        by_key = {f.key: f for f in futures_of(X) + futures_of(y)}
        keys = zip(flatten(X.__dask_keys__()), flatten(y.__dask_keys__()), X.chunks[0])
        self._futures, self._blocks = [], []
        for b, (kx, ky, n) in enumerate(keys):
            if n:
                self._futures.append((by_key[kx], by_key[ky]))
                self._blocks.append(b)
        self.holders = [None] * len(self._futures)
        self._locate(range(len(self._futures)))

    def _place(self, shards):
        """Send ``shards`` from the client's copy to live workers, again and
        again for those that did not arrive (their worker died, or the
        scheduler still listed a dead one), until all are held or
        ``adadamp.recover-timeout`` passes."""
        deadline = time.monotonic() + recover_timeout()
        todo = list(shards)
        while True:
            workers = self.live_workers(wait=True)
            try:
                self._scatter(todo, workers)
            except PLACEMENT_ERRORS as exc:
                logger.info("fit %s: placing %d shards failed (%r); placing "
                            "them again on live workers", self.token, len(todo), exc)
                self.retried = True
                self._refresh()
            todo = [i for i in todo if self.holders[i] not in self.live_workers()]
            if not todo:
                return
            if time.monotonic() > deadline:
                raise NoWorkersError(
                    f"{len(todo)} shards of the training data could not be placed in "
                    f"{recover_timeout():.0f} s (dask config 'adadamp.recover-timeout'): "
                    "workers kept leaving or failing")
            time.sleep(0.05)

    def _scatter(self, shards, workers):
        """Send shards from the client's copy to ``workers[i mod P]``.

        The rows go straight to their worker; a task per array then takes
        them over under the shard's key, so that the task stream shows the
        placement (the scheduler only ever sees the task, not the rows).
        A target that fails is dropped for this fit, and its shards stay
        unheld (``holders[i]`` None) for the caller to place again.
        """
        X, y = self._source
        self._generation += 1
        gen = self._generation
        raw, where, scattered = defaultdict(dict), defaultdict(list), {}
        pending = 0
        for i in shards:
            self.holders[i] = None

        def send():
            for target, data in raw.items():
                try:
                    # The timeout bounds only the wait for the target to be
                    # running (distributed polls the scheduler until then): a
                    # worker that died or is closing is given up in seconds.
                    scattered.update(self.client.scatter(
                        data, workers=[target], direct=True, timeout=SCATTER_WAIT_S))
                except PLACEMENT_ERRORS as exc:
                    logger.info("fit %s: sending rows to %s failed (%r)",
                                self.token, target, exc)
                    self.worker_lost(target)
            raw.clear()

        try:
            for i in shards:
                target = workers[i % len(workers)]
                where[target].append(i)
                rows = self.ids[i]
                shard_X = raw[target][f"adadamp-rows-X-{self.token}-{i}-{gen}"] = X[rows]
                raw[target][f"adadamp-rows-y-{self.token}-{i}-{gen}"] = y[rows]
                pending += shard_X.nbytes
                # In batches: the client never holds a second copy of all the data.
                if pending > SCATTER_BYTES:
                    send()
                    pending = 0
            send()
        except BaseException:
            # The rows sent so far: their futures would outlive the fit in
            # the exception's frames (send's closure keeps this dict).
            scattered.clear()
            raise
        sent = []
        for target, mine in where.items():
            for i in mine:
                rows = [scattered.get(f"adadamp-rows-{n}-{self.token}-{i}-{gen}")
                        for n in "Xy"]
                if None in rows:  # its target failed: placed again by the caller
                    continue
                sent.append(i)
                self._futures[i] = tuple(
                    self.client.submit(identity, f,
                                       key=(f"adadamp-shard-{n}-{self.token}", i, gen),
                                       workers=[target], allow_other_workers=True)
                    for n, f in zip("Xy", rows))
        scattered.clear()  # the shards' tasks hold the rows now
        try:
            wait([f for i in sent for f in self._futures[i]], timeout=recover_timeout())
        finally:
            # A shard whose rows died with their worker is not held anywhere.
            self._locate(sent)

    def follow(self, workers):
        """Spread the shards over ``workers`` (addresses), shard ``i`` on
        worker ``i mod P``, moving only those that are elsewhere.

        A move is a task reading the old key on its new worker: the rows go
        from worker to worker, never through the client.
        """
        workers = sorted(set(workers) - self._dead)
        if not workers or workers == self.workers:
            return
        self._generation += 1
        moved = []
        for i, (fx, fy) in enumerate(self._futures):
            target = workers[i % len(workers)]
            if self.holders[i] != target:
                self._futures[i] = tuple(
                    self.client.submit(identity, f,
                                       key=(f"adadamp-shard-{n}-{self.token}", i,
                                            self._generation),
                                       workers=[target], allow_other_workers=True)
                    for n, f in (("X", fx), ("y", fy)))
                moved.append(i)
        self.workers = workers
        if moved:
            wait([f for i in moved for f in self._futures[i]], timeout=recover_timeout())
            self._locate(moved)

    # --- where things are -------------------------------------------------

    def _scheduler_workers(self):
        if self.members is None:
            return set(self.client.nthreads())
        return self.members.live

    def _refresh(self):
        """Ask the scheduler which workers it has (after a failure that its
        events may not have reached us for yet)."""
        if self.members is not None:
            self.members.refresh()

    def live_workers(self, wait=False):
        """Addresses of the workers the scheduler has, less those this fit
        saw die or stall; with ``wait``, waits for one when there are none."""
        deadline = time.monotonic() + recover_timeout()
        while True:
            live = sorted(self._scheduler_workers() - self._dead)
            if live or not wait:
                return live
            left = deadline - time.monotonic()
            if left <= 0:
                raise NoWorkersError(
                    f"the cluster has had no workers for {recover_timeout():.0f} s "
                    "(dask config 'adadamp.recover-timeout'); the fit stopped "
                    "with the weights of its last complete update. Start workers "
                    "and fit again, or raise the timeout.")
            # Not client.wait_for_workers: with a cluster manager it replaces
            # the manager's worker list, racing its removals (a KeyError in
            # SpecCluster's watcher). The membership's events say it all.
            version = self.members.version if self.members is not None else None
            waited = time.monotonic()
            while (time.monotonic() - waited < min(left, 1.0) and self.members is not None
                   and self.members.version == version):
                time.sleep(0.02)
            if self.members is None or self.members.version == version:
                self._refresh()

    def _locate(self, shards):
        """Ask the scheduler where shards are (after placement or a loss).

        A shard's holder is a live worker with both its X and its y. Blocks
        of a dask X and y that the user's cluster put on different workers
        are brought together first (y moves to X's worker).
        """
        shards = list(shards)
        # The scheduler's own answer: Client.who_has raises for futures
        # cancelled with a lost worker, and those are the ones to find.
        where = self.client.sync(self.client.scheduler.who_has, keys=[
            f.key for i in shards for f in self._futures[i]])
        apart = []
        for i in shards:
            on_x, on_y = (set(where.get(f.key, ())) - self._dead for f in self._futures[i])
            both = sorted(on_x & on_y)
            self.holders[i] = both[0] if both else None
            self.used.update(both[:1])
            if not both and on_x and on_y:
                apart.append((i, min(on_x)))
        if apart:
            self._generation += 1
            for i, target in apart:
                fx, fy = self._futures[i]
                self._futures[i] = (fx, self.client.submit(
                    identity, fy, workers=[target], allow_other_workers=True,
                    key=(f"adadamp-shard-y-{self.token}", i, self._generation)))
            wait([self._futures[i][1] for i, _ in apart], timeout=recover_timeout())
            self._locate([i for i, _ in apart])

    def worker_lost(self, address):
        """A call to ``address`` failed or stalled: it is gone for this fit
        (a worker restarted by its nanny comes back under a new address)."""
        self._dead.add(address)

    def recover(self, shards=()):
        """Make sure every shard is held by a live worker.

        ``shards`` are shards a worker said it does not hold (moved or
        lost); shards on workers that died are found here too. A numpy shard
        that is gone is sent again from the client's copy; a dask-array
        block is recomputed by the scheduler from its graph.
        """
        live = self.live_workers(wait=True)
        suspects = set(shards) | {i for i, h in enumerate(self.holders)
                                  if h not in live}
        if not suspects:
            return
        self._locate(suspects)
        gone = sorted(i for i in suspects if self.holders[i] not in live)
        if not gone:
            return
        logger.info("fit %s: re-placing %d shards lost with their workers",
                    self.token, len(gone))
        if self._source is not None:
            self._place(gone)
        else:
            # The scheduler recomputes a wanted key whose worker died.
            self._wait_computed(gone, "were lost and could not be recomputed")
            stalled = [i for i in gone if self.holders[i] is None]
            if stalled:
                self._recompute(stalled, live)
        self.workers = self.live_workers()

    def _recompute(self, shards, live):
        """Compute dask-array blocks again on live workers, under new keys:
        the scheduler still lists them on a worker that stalls (it answers
        nothing, so its copy cannot be read or moved)."""
        if self._graph is None:
            raise DataLostError("the training data's blocks are on a worker that "
                                "does not answer, and there is no graph to "
                                "compute them again from")
        logger.info("fit %s: computing %d blocks again away from stalled workers",
                    self.token, len(shards))
        self._generation += 1
        for i in shards:
            b = self._blocks[i]
            parts = [clone(a.blocks[b], seed=(self.token, i, self._generation))
                     for a in self._graph]
            self._futures[i] = tuple(futures_of(
                self.client.persist(parts, workers=live, allow_other_workers=False)))
        self._wait_computed(shards, "could not be computed again")

    def _wait_computed(self, shards, failure):
        """Wait for the blocks of ``shards`` to be in memory and find them;
        raise DataLostError (``failure`` says what went wrong) otherwise."""
        futures = [f for i in shards for f in self._futures[i]]
        wait(futures, timeout=recover_timeout())
        bad = [f for f in futures if f.status != "finished"]
        if bad:
            raise DataLostError(
                f"{len(bad)} blocks of the training data {failure} "
                f"(first: {bad[0].key!r}, {bad[0].status})")
        self._locate(shards)

    def keys(self, shard):
        """The Dask keys of shard ``shard``'s X and y."""
        return tuple(f.key for f in self._futures[shard])

    def check_finite(self):
        """Raise ValueError if the placed dask X, or a float y, holds NaN or
        infinity."""
        for name, a in (("X", self.X), ("y", self._y)):
            if (a is not None and a.dtype.kind in "fc"
                    and not bool(da.isfinite(a).all().compute())):
                raise ValueError(f"{name} contains NaN or infinite values; "
                                 "only finite numbers are accepted")

    def close(self):
        """Drop every reference: the scheduler forgets the fit's keys (a
        persisted dask array the user passed keeps its own)."""
        self._futures, self.X, self._y, self._source = [], None, None, None

    def __len__(self):
        return len(self.ids)

