"""The Dask side of one fit: its shards and the direct calls of each update.

A :class:`FitSession` places the training data on the cluster once (see
:mod:`dask_adadamp._shards`), then turns each model update into one direct
call per worker that holds rows of it (a handler the
:class:`~dask_adadamp._extension.WorkerExtension` adds to every worker) and
adds the returned per-chunk sums in a fixed tree. Everything it puts on the
cluster carries the fit's token in its key and is released by
:meth:`FitSession.close`.

Why direct calls and not tasks: a round of tasks goes client -> scheduler
-> workers -> scheduler -> client and costs about 20 ms here whatever the
model; a direct call costs what its bytes cost (docs/performance.md).
What tasks gave for free, the session does itself: a call that fails
because its worker died is made again, for the missing chunks only, once
the shards are back on live workers; the result is the same bits.

An elastic cluster changes under a fit. The scheduler's events say at once
which workers left (:mod:`dask_adadamp._membership`), so a departed worker
is never called (a call to its address would wait out distributed's 30 s
connect timeout). A worker that is there but does not answer (a stopped
process, a hung machine) has a deadline per call, derived from this fit's
own calls (:mod:`dask_adadamp._deadlines`, dask config
``adadamp.call-timeout``): past it, the worker is dropped for the fit and
its chunks are computed where their shards are placed again.
"""
import asyncio
import gc
import logging
import math
import time
import traceback
import uuid
import weakref
from collections import defaultdict
from typing import NamedTuple

import dask
import dask.array as da
import numpy as np
from distributed.core import clean_exception
from distributed.protocol.serialize import to_serialize

from . import _membership as membership, _tree as tree, _worker as worker
from ._deadlines import Deadlines, within_deadlines
from ._extension import WorkerExtension
from ._shards import Shards, recover_timeout
from .exceptions import NoWorkersError

logger = logging.getLogger(__name__)


def tree_policy():
    """When rounds of calls go through a tree of workers.

    The dask config ``adadamp.tree-workers``: ``"auto"`` (the default) times
    direct calls and the tree on a fit's first rounds at each cluster size
    and keeps the faster (:class:`dask_adadamp._tree.PathChooser`); an int
    uses the tree for rounds to at least that many workers; None or 0
    never does. Either way an update's result has the same bits.

    >>> import dask
    >>> with dask.config.set({"adadamp.tree-workers": 4}):
    ...     tree_policy()
    4
    """
    value = dask.config.get("adadamp.tree-workers")
    if value in (None, 0):
        return None
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)
                           and value >= 1):
        return value
    raise ValueError(
        f"dask config 'adadamp.tree-workers'={value!r} is not accepted; give "
        "'auto', the fewest workers (an int >= 1) whose rounds go through a "
        "tree, or None for never")


# The direct path brings one gradient per chunk back to the client; past
# this many chunks per worker the round goes through the tree, whose
# workers add them up (a few gradients come back, whatever grads_per_worker).
DIRECT_CHUNKS_PER_WORKER = 2


def default_shard_rows(n_rows, grads_per_worker, max_workers=None, max_shards=64):
    """Rows per shard for data the fit places itself.

    A multiple of ``grads_per_worker``, so that an update of ``B`` examples
    needs ``ceil(B / grads_per_worker)`` chunks (one more where it straddles
    a shard's end), and at most about ``max_shards`` shards, or four per
    worker of ``max_workers``, so that there are shards for every worker
    without tiny chunks.

    >>> default_shard_rows(1000, 128)
    128
    >>> default_shard_rows(100_000, 128)
    1664
    >>> default_shard_rows(100_000, 128, max_workers=100)
    256
    """
    max_shards = max(max_shards, 4 * (max_workers or 0))
    chunks_per_shard = math.ceil(n_rows / (max_shards * grads_per_worker))
    return grads_per_worker * max(1, chunks_per_shard)


class FitSession:
    """One fit on the cluster: its shards, and the direct calls of each update.

    Every update sends the weights and a list of chunks straight to the
    workers that hold the chunks' shards (one call per worker, all at once,
    through the client's connection pool); each worker computes its chunks
    and replies with their sums. The scheduler places and recovers the data
    (:class:`~dask_adadamp._shards.Shards`) but is not on the per-update path.
    A call that fails because its worker died or left is made again, for the
    missing chunks only, once the shards are back on live workers; chunks
    are added in a fixed tree over their positions, so the update's result
    is the same bits as an undisturbed one.

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
    >>> from dask_adadamp._worker import ModelSpec
    >>> from dask_adadamp._sampling import EpochSampler
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
        self.members = membership.acquire(client)
        self.shards = Shards(client, self.token, self.members)
        self.deadlines = Deadlines()
        self._has_spec = set()
        self._recovered = False
        self._paths = tree.PathChooser(tree_policy())
        # (update number, fraction, mean loss) evaluated in an update's calls
        # for the schedule's next ask (the estimator sets and reads it).
        self.ridden_loss = None
        # Rows read by the schedule's loss evaluations, beside the gradient's
        # (the estimator takes them into its history with each update).
        self.loss_examples = 0
        try:
            _ensure_extension(client)
            if isinstance(X, da.Array):
                self.shards.place_dask(X, y)
            else:
                self.shards.place_numpy(X, y, shard_rows, seed)
        except BaseException as exc:
            self.close()
            # The placement's frames hold futures of the fit's rows: cleared,
            # so no key outlives the fit while the exception does.
            traceback.clear_frames(exc.__traceback__)
            raise

    @property
    def shard_ids(self):
        """For each shard, the global example number of each of its rows."""
        return self.shards.ids

    def follow(self, workers):
        """Spread the shards over ``workers`` (see :meth:`Shards.follow`)."""
        self.shards.follow(workers)

    def check_finite(self):
        """Raise ValueError if the placed X holds NaN or infinity."""
        self.shards.check_finite()

    def gradient(self, weights, buffers, update, seed, loss_rows=None,
                 sq_norms=True):
        """Sum of gradients, sum of losses and count for one update.

        Parameters
        ----------
        weights : numpy.ndarray
            Flat float32 weights.
        buffers : dict of str to numpy.ndarray
            The module's buffers, or ``{}``.
        update : sampling.Update
        seed : int or sequence of int
            Seeds the update's chunks (each gets its own stream), so that a
            chunk computes the same wherever and whenever it runs.
        loss_rows : list of numpy.ndarray or None
            Also evaluate the training loss at ``weights`` over these rows
            of each shard, in the same calls (``GradientSums.mean_loss``).
        sq_norms : bool
            Compute each chunk's squared gradient norm (NoiseScaleDamp).

        Returns
        -------
        GradientSums
        """
        seeds = np.random.SeedSequence(seed).generate_state(len(update.chunks))
        chunks = [(j, chunk.shard, chunk.rows, int(s), j == 0 and bool(buffers))
                  for j, (chunk, s) in enumerate(zip(update.chunks, seeds))]
        losses = self._loss_items(loss_rows) if loss_rows is not None else []
        self.loss_examples += sum(len(r) for r in loss_rows or [])
        nodes, meta, losses_out, timing = self._compute(weights, buffers, chunks,
                                                        losses, sq_norms)
        meta = [meta[j] for j in range(len(chunks))]
        return GradientSums(
            grad=nodes[(tree.depth(len(chunks)), 0)],
            loss=math.fsum(m[0] for m in meta),
            count=sum(m[1] for m in meta),
            buffers=meta[0][3] if buffers else {},
            chunk_sizes=[m[1] for m in meta],
            chunk_sq_norms=[m[2] for m in meta],
            mean_loss=(self._mean(losses_out, loss_rows)
                       if loss_rows is not None else None),
            timing=timing)

    def mean_loss(self, weights, buffers, rows=None):
        """Mean training loss at ``weights``, forward only, in one round of
        calls (each worker evaluates the shards it holds).

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
        rows = self.all_rows() if rows is None else rows
        self.loss_examples += sum(len(r) for r in rows)
        _, _, losses, _ = self._compute(weights, buffers, [],
                                        self._loss_items(rows), False)
        return self._mean(losses, rows)

    def all_rows(self):
        """Every row of every shard, as ``rows`` for :meth:`mean_loss`."""
        return [np.arange(len(ids)) for ids in self.shards.ids]

    def _loss_items(self, rows):
        return [(i, i, r) for i, r in enumerate(rows) if len(r)]

    @staticmethod
    def _mean(losses, rows):
        # fsum rounds exactly once: the same mean however shards were grouped.
        return math.fsum(losses[i] for i in sorted(losses)) / sum(len(r) for r in rows)

    # --- the calls ------------------------------------------------------

    def _compute(self, weights, buffers, chunks, losses, sq_norms):
        """Run ``chunks`` and ``losses`` where their shards are; retry the
        missing ones after a worker is lost, until all are done.

        Returns the chunks' gradients added up to the root of the chunk
        tree (:mod:`dask_adadamp._tree`), per chunk its loss sum, count,
        squared norm and buffers, the loss sums by item, and the timing.
        """
        n = len(chunks)
        nodes, meta, done_losses = {}, {}, {}
        timing = {"workers": {}, "rounds": 0, "wall_s": 0.0,
                  "bytes_out": 0, "bytes_in": 0, "lost": [], "stalled": []}
        deadline = time.monotonic() + recover_timeout()
        start = time.perf_counter()
        retries = 0
        while True:
            todo_c = [c for c in chunks if c[0] not in meta]
            todo_l = [i for i in losses if i[0] not in done_losses]
            if not (todo_c or todo_l):
                break
            if time.monotonic() > deadline:
                raise NoWorkersError(
                    f"the update could not be completed in {recover_timeout():.0f} s "
                    "(dask config 'adadamp.recover-timeout'): workers kept leaving "
                    "or failing")
            # A holder the scheduler removed (or this fit saw fail) is not
            # called: its shards are found or placed again first.
            live = set(self.shards.live_workers())
            holders = [h if h in live else None for h in self.shards.holders]
            # A worker that held shards and left (its data moved away first,
            # as a graceful close does, or not) is named once in the history.
            for addr in self.shards.used - live:
                if addr not in self.shards.reported:
                    self.shards.reported.add(addr)
                    timing["lost"].append(addr)
            plan = defaultdict(lambda: ([], []))
            for c in todo_c:
                plan[holders[c[1]]][0].append(c)
            for i in todo_l:
                plan[holders[i[1]]][1].append(i)
            if retries:  # a worker still joining or a shard in flight: back off
                time.sleep(min(0.01 * 2 ** retries, 1.0))
            if None in plan:  # shards lost in an earlier round
                self.shards.recover()
                retries += 1
                continue
            timing["rounds"] += 1
            via_tree = (self._paths.use_tree(len(plan))
                        or (self._paths.policy is not None and len(todo_c)
                            > DIRECT_CHUNKS_PER_WORKER * len(plan)))
            timing["tree"] = timing.get("tree", False) or via_tree
            call = self._call_tree if via_tree else self._call_all
            round_start = time.perf_counter()
            replies, got = self.client.sync(call, plan, weights, buffers, sq_norms, n,
                                            self._deadlines(plan))
            if timing["rounds"] == 1:
                self._paths.record(len(plan), via_tree,
                                   time.perf_counter() - round_start)
            timing["bytes_out"] += (1 if via_tree else len(plan)) * weights.nbytes
            timing["bytes_in"] += sum(a.nbytes for a in got["nodes"].values())
            nodes.update(got["nodes"])
            meta.update(got["meta"])
            done_losses.update(got["losses"])
            troubled = set()
            for addr, reply in replies.items():
                mine_c, mine_l = plan[addr]
                status = reply.get("status")
                if status == "OK":
                    timing["workers"][addr] = (reply["rtt_s"], reply["compute_s"])
                    self.deadlines.answered(reply["rtt_s"], _rows(mine_c, mine_l),
                                            reply.get("with_spec", False))
                elif status in ("lost", "stalled"):
                    if status == "lost":
                        logger.info("fit %s: call to %s failed (%s); recovering",
                                    self.token, addr, reply["error"])
                    else:
                        logger.warning(
                            "fit %s: worker %s did not answer within %.1f s (dask "
                            "config 'adadamp.call-timeout'); its chunks are computed "
                            "elsewhere and it is not called again in this fit",
                            self.token, addr, reply["deadline_s"])
                    timing[status].append(addr)
                    self.shards.reported.add(addr)
                    self.shards.worker_lost(addr)
                    self._recovered = True
                    self._has_spec.discard(addr)
                    troubled.add(None)
                elif status == "error":
                    try:
                        _, exc, tb = clean_exception(**reply)
                    except AssertionError:
                        # distributed sends a traceback it cannot pickle (a
                        # RecursionError's) as text, then asserts on it
                        _, exc, tb = clean_exception(reply.get("exception"))
                    raise exc.with_traceback(tb)
                elif status == "no-model":
                    self._has_spec.discard(addr)
                elif status == "missing":
                    troubled |= {c[1] for c in mine_c if c[0] in reply["chunks"]}
                    troubled |= {i[1] for i in mine_l if i[0] in reply["losses"]}
                elif status == "unreached":  # below a lost member: maybe
                    self._has_spec.discard(addr)  # it never got the model
                else:  # no handler yet (just joined)
                    troubled.add(None)
            if troubled:
                self.shards.recover(troubled - {None})
            retries += 1
        tree.reduce_nodes(nodes, n)
        timing["wall_s"] = time.perf_counter() - start
        return nodes, meta, done_losses, timing

    def _deadlines(self, plan):
        return {addr: self.deadlines.of(_rows(*plan[addr]), addr not in self._has_spec)
                for addr in plan}

    def _message(self, addr, chunks, losses):
        """What a call tells ``addr`` of its share (the model with its first)."""
        keys = self.shards.keys
        msg = {"chunks": [(j, *keys(s), rows, seed, rb) for j, s, rows, seed, rb in chunks],
               "losses": [(i, *keys(s), rows) for i, s, rows in losses],
               "spec": None}
        if addr not in self._has_spec:
            msg["spec"] = self.spec
            self._has_spec.add(addr)
        return msg

    async def _call_all(self, plan, weights, buffers, sq_norms, n, deadlines):
        """One call per worker, all at once: every worker's gradients come
        back one per chunk. A failed call counts its worker as lost; a call
        past its deadline while another worker answered, as stalled."""
        common = {"token": self.token, "weights": to_serialize(weights),
                  "buffers": to_serialize(buffers) if buffers else None,
                  "sq_norms": sq_norms}
        got = {"nodes": {}, "meta": {}, "losses": {}}

        async def call(addr, chunks, losses):
            msg = {k: to_serialize(v) if v is not None else None
                   for k, v in self._message(addr, chunks, losses).items()}
            with_spec = msg["spec"] is not None
            start = time.perf_counter()
            try:
                reply = await self.client.rpc(addr).adadamp_compute(**msg, **common)
            except (OSError, asyncio.TimeoutError) as exc:  # it died or left
                return {"status": "lost", "error": repr(exc)}
            if not isinstance(reply, dict):  # no handler yet: it just joined
                return {"status": "no-handler"}
            if reply.get("status") == "OK":
                result = reply.pop("result")
                for j, (grad, *rest) in result["chunks"].items():
                    got["nodes"][(0, j)] = grad
                    got["meta"][j] = rest
                got["losses"].update(result["losses"])
                reply["compute_s"] = result["compute_s"]
                reply["rtt_s"] = time.perf_counter() - start
                reply["with_spec"] = with_spec
            return reply

        tasks = {asyncio.ensure_future(call(a, *plan[a])): a for a in plan}
        replies = await within_deadlines(tasks, deadlines, self.deadlines.answered_at,
                                         gone=self.members.removed.__contains__)
        return replies, got

    async def _call_tree(self, plan, weights, buffers, sq_norms, n, deadlines):
        """One call to the first worker, passed on through the others in a
        binomial tree (:meth:`WorkerExtension.tree`): the client sends the
        weights once and gets back one partial sum, or a few.

        Workers are ordered by the first chunk they compute: with chunks
        dealt round-robin over the workers, each subtree of calls then
        computes one subtree of the chunk tree and passes up one node.
        """
        first = {addr: min((c[0] for c in plan[addr][0]), default=n + k)
                 for k, addr in enumerate(plan)}
        order = sorted(plan, key=first.get)
        members = [(addr, *self._message(addr, *plan[addr]).values())
                   for addr in order]
        # Each member waits for a subtree below it a level's deadline less
        # than its caller waits for it, so a stalled member is reported by
        # its parent rather than taking the parent's subtree with it.
        deadline = max(deadlines.values())
        start = time.perf_counter()
        try:
            reply = await asyncio.wait_for(self.client.rpc(order[0]).adadamp_tree(
                token=self.token, weights=to_serialize(weights),
                buffers=to_serialize(buffers) if buffers else None,
                sq_norms=sq_norms, n=n, members=to_serialize(members),
                deadline=deadline), tree.budget(len(order), deadline) + deadline)
        except (OSError, asyncio.TimeoutError) as exc:
            status = ({"status": "stalled", "deadline_s": deadline}
                      if isinstance(exc, asyncio.TimeoutError)
                      else {"status": "lost", "error": repr(exc)})
            replies = {order[0]: status}
            replies.update((a, {"status": "unreached"}) for a in order[1:])
            return replies, {"nodes": {}, "meta": {}, "losses": {}}
        if not isinstance(reply, dict) or reply.get("status") != "tree":
            # no handler yet: the first worker just joined
            return ({order[0]: {"status": "no-handler"},
                     **{a: {"status": "unreached"} for a in order[1:]}},
                    {"nodes": {}, "meta": {}, "losses": {}})
        got = reply["result"]
        replies = got.pop("replies")
        replies[order[0]]["rtt_s"] = time.perf_counter() - start
        return replies, got

    @property
    def n_rows(self):
        """Training examples placed on the cluster."""
        return sum(len(ids) for ids in self.shards.ids)

    @property
    def n_workers(self):
        """Workers in the cluster now (as the scheduler's events tell)."""
        return len(self.members.live) if self.members is not None else 0

    def workers_used(self, update):
        """How many workers hold the shards an update reads (its chunks are
        computed where their shard is)."""
        return len({self.shards.holders[chunk.shard] for chunk in update.chunks})

    def close(self):
        """Release everything this fit placed on the cluster.

        Shards are released by dropping the fit's references, never by
        cancelling: a persisted dask array the user passed shares its keys
        with the shards and must outlive the fit.
        """
        self.shards.close()
        if self.members is not None:
            membership.release(self.client)
            self.members = None
        if self._paths.policy == "auto" and self._paths.summary():
            logger.info("fit %s: median round of calls by path: %s", self.token,
                        self._paths.summary())
        if self._recovered or self.shards.retried:
            # The connection errors of lost workers keep frames, and through
            # them futures of the fit, in reference cycles: without a
            # collection the scheduler would keep those keys until Python's
            # garbage collector happens to run (seen: y blocks moved next to
            # their X, still wanted after every worker was killed).
            gc.collect()
        try:
            # Not on a worker that stalled: the scheduler's broadcast would
            # wait for it (it keeps its copy of the model until it restarts).
            live = self.shards.live_workers()
            if live:
                self.client.run(worker.forget, self.token, workers=live)
        except Exception:  # a closed client or a cluster gone: nothing left
            logger.debug("could not clear worker caches", exc_info=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# Registration costs a round trip and the scheduler keeps the plugin (and
# gives it to workers that join later): once per client.
_extended = weakref.WeakSet()


def _ensure_extension(client):
    if client not in _extended:
        client.register_plugin(WorkerExtension())
        _extended.add(client)


class GradientSums(NamedTuple):
    """What the calls of one update return, added up.

    ``grad`` and ``loss`` are sums over the update's ``count`` examples;
    ``buffers`` are the module's buffers after the first chunk (or ``{}``);
    chunk ``j`` had ``chunk_sizes[j]`` examples and a mean gradient of
    squared norm ``chunk_sq_norms[j]`` (None unless asked for);
    ``mean_loss`` is the training loss evaluated in the same calls (or
    None); ``timing`` has the update's wall-clock seconds (``wall_s``), the
    rounds of calls it took, the weight and gradient bytes the client sent
    and received (``bytes_out``, ``bytes_in``) and, per worker, the call's
    round trip and compute seconds.
    """

    grad: np.ndarray
    loss: float
    count: int
    buffers: dict
    chunk_sizes: list
    chunk_sq_norms: list
    mean_loss: float | None = None
    timing: dict | None = None


def _rows(chunks, losses):
    return sum(len(c[2]) for c in chunks) + sum(len(i[2]) for i in losses)


def new_token():
    """A fresh name for one fit's keys on the cluster."""
    return uuid.uuid4().hex[:12]
