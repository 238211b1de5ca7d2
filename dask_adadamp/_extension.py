"""The worker side of the direct update path: handlers a WorkerPlugin adds.

Each update, the client calls every worker that holds rows of the update
once, straight through its connection pool (``client.rpc(addr)``), the way
distributed's P2P shuffle extension talks to workers: the scheduler is not
on the per-update path. The handler finds the shards the call names in the
worker's own data (they were placed as Dask keys, so the scheduler knows
where they are and can move them), computes off the event loop in the
worker's executor and replies with per-chunk sums.

Replies are dicts with a ``status``:

- ``"OK"``: ``result`` holds :func:`dask_adadamp._worker.compute_call`'s dict;
- ``"missing"``: ``chunks`` and ``losses`` list the items whose shard
  this worker does not hold (moved or lost): the client finds the shards
  again and calls where they are;
- ``"no-model"``: the worker has not seen this fit's model yet (it joined
  late, or restarted): the client calls again with the model.

- ``"error"``: the model raised (a module that fails in training); the
  client raises the same exception, with its traceback, as a task's would.

Examples
--------
The client registers the extension once per cluster; workers that join
later get it too:

>>> from distributed import Client, LocalCluster
>>> cluster = LocalCluster(n_workers=1, processes=False, dashboard_address=':0')
>>> client = Client(cluster)
>>> _ = client.register_plugin(WorkerExtension())
>>> [worker.handlers["adadamp_compute"].__name__
...  for worker in cluster.workers.values()]
['compute']
>>> client.close(); cluster.close()
"""
import asyncio
import ctypes
import logging
import sys
import time

import dask

from distributed import WorkerPlugin
from distributed.core import error_message
from distributed.protocol.serialize import Serialize, to_serialize

from . import _tree as compute_tree
from . import _worker as compute

logger = logging.getLogger(__name__)

NAME = "dask-adadamp"


class WorkerExtension(WorkerPlugin):
    """Add the ``adadamp_compute`` handler to a worker.

    Registered by a fit with ``client.register_plugin`` (idempotent: one
    registration per cluster, inherited by workers that join later).
    """

    name = NAME
    idempotent = True

    def setup(self, worker):
        self.worker = worker
        worker.handlers["adadamp_compute"] = self.compute
        worker.handlers["adadamp_tree"] = self.tree
        if dask.config.get("adadamp.tune-worker-malloc"):
            keep_buffers_in_heap()

    def teardown(self, worker):
        worker.handlers.pop("adadamp_compute", None)
        worker.handlers.pop("adadamp_tree", None)

    async def compute(self, token, weights, buffers, chunks, losses,
                      sq_norms=False, spec=None):
        """Handler: one update's share of this worker.

        ``chunks`` is a list of ``(j, key_X, key_y, rows, seed,
        return_buffers)`` and ``losses`` of ``(i, key_X, key_y, rows)``;
        ``spec`` comes with a fit's first call to a worker.
        """
        reply = await self._run(token, weights, buffers, chunks, losses,
                                sq_norms, spec)
        if reply["status"] == "OK":
            reply["result"] = to_serialize(reply["result"])
        return reply

    async def tree(self, token, weights, buffers, sq_norms, n, members, deadline=None):
        """Handler: an update's share of this worker and of the workers
        below it in a binomial tree (:func:`dask_adadamp._tree.children`).

        ``members`` lists ``(address, chunks, losses, spec)``, this worker
        first. ``deadline`` (seconds per call, or None) bounds the wait for
        each subtree below (:func:`dask_adadamp._tree.budget`): a member
        that does not answer in time is reported ``"stalled"``. The call is passed on with the weights, this worker computes
        its own chunks meanwhile, then adds what its subtree computed as far
        as the chunk tree allows (:func:`dask_adadamp._tree.reduce_nodes`),
        so one or a few partial sums go up instead of one per chunk.

        Returns
        -------
        dict
            ``status`` ``"tree"`` and ``result``: ``nodes`` (partial sums
            by tree node), ``meta`` (per chunk: loss
            sum, count, squared norm and maybe buffers), ``losses`` (loss
            sums by item) and ``replies``: for every member its status as
            :meth:`compute` gives it (without the result), ``"lost"`` where
            the call to it failed, ``"stalled"`` where it did not answer
            within its deadline, or ``"unreached"`` below either.
        """
        address, chunks, losses, spec = members[0]
        common = {"token": token, "weights": to_serialize(weights),
                  "buffers": to_serialize(buffers) if buffers else None,
                  "sq_norms": sq_norms, "n": n, "deadline": deadline}
        subtrees = compute_tree.children(members)
        below = [asyncio.create_task(self._pass_on(common, sub)) for sub in subtrees]
        own = await self._run(token, weights, buffers, chunks, losses,
                              sq_norms, spec)
        nodes, meta, loss_sums, replies = {}, {}, {}, {}
        if own["status"] == "OK":
            result = own.pop("result")
            for j, (grad, *rest) in result["chunks"].items():
                nodes[(0, j)] = grad
                meta[j] = rest
            loss_sums.update(result["losses"])
            own["compute_s"] = result["compute_s"]
        replies[address] = _unwrapped(own)
        for sub, task in zip(subtrees, below):
            reply = await task
            compute_tree.reduce_nodes(nodes, n)  # while waiting for the rest
            if reply.get("status") != "tree":
                replies[sub[0][0]] = _unwrapped(reply)
                replies.update((m[0], {"status": "unreached"}) for m in sub[1:])
                continue
            got = reply["result"]
            nodes.update(got["nodes"])
            meta.update(got["meta"])
            loss_sums.update(got["losses"])
            replies.update(got["replies"])
        compute_tree.reduce_nodes(nodes, n)
        # Pickled whole: replies relayed from below hold exceptions, which
        # arrived deserialized and would not pass as plain msgpack.
        return {"status": "tree", "result": to_serialize(
            {"nodes": nodes, "meta": meta, "losses": loss_sums, "replies": replies})}

    async def _pass_on(self, common, members):
        start = time.perf_counter()
        deadline = common["deadline"]
        wait = None if deadline is None else compute_tree.budget(len(members), deadline)
        try:
            reply = await asyncio.wait_for(self.worker.rpc(members[0][0]).adadamp_tree(
                members=to_serialize(members), **common), wait)
        except asyncio.TimeoutError:  # there, but not answering
            return {"status": "stalled", "deadline_s": deadline}
        except OSError as exc:  # it died or left
            return {"status": "lost", "error": repr(exc)}
        except Exception as exc:
            return error_message(exc, status="error")
        if not isinstance(reply, dict):  # no handler yet: it just joined
            return {"status": "no-handler"}
        if reply.get("status") == "tree":
            reply["result"]["replies"][members[0][0]]["rtt_s"] = (
                time.perf_counter() - start)
        return reply

    async def _run(self, token, weights, buffers, chunks, losses, sq_norms, spec):
        try:
            if spec is not None:
                compute.remember(spec)
            elif not compute.knows(token):
                return {"status": "no-model"}
            data = self.worker.data
            gone = {"chunks": [c[0] for c in chunks if not _holds(data, c[1:3])],
                    "losses": [i[0] for i in losses if not _holds(data, i[1:3])]}
            if gone["chunks"] or gone["losses"]:
                return {"status": "missing", **gone}
            spec = compute.spec_of(token)
            chunk_args = [(j, data[kx], data[ky], rows, seed, rb)
                          for j, kx, ky, rows, seed, rb in chunks]
            loss_args = [(i, data[kx], data[ky], rows) for i, kx, ky, rows in losses]
            # Off the event loop: a long computation there would block the
            # worker's heartbeats and every other message.
            result = await asyncio.get_running_loop().run_in_executor(
                self.worker.executors["default"], compute.compute_call, spec,
                weights, buffers or {}, chunk_args, loss_args, sq_norms)
            return {"status": "OK", "result": result}
        except Exception as exc:  # the model's own errors go back to the fit
            return error_message(exc, status="error")


def _unwrapped(reply):
    """``reply`` without ``to_serialize`` wrappers (an error's exception
    and traceback): it travels inside a payload pickled whole."""
    return {k: v.data if isinstance(v, Serialize) else v for k, v in reply.items()}


def _holds(data, keys):
    return all(key in data for key in keys)


def keep_buffers_in_heap(mmap_bytes=32 * 2**20, trim_bytes=64 * 2**20):
    """Let glibc's malloc keep a training step's buffers in the heap.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` so
    that they give memory back to the OS. Setting that threshold also
    freezes glibc's mmap threshold at 128 kB, so every activation and
    gradient buffer of a forward and backward pass is a fresh ``mmap``,
    page faults included: the same chunk measured 1.5x slower in such a
    process (6.8 against 4.5 ms, 256 rows of the 270k MLP), 1.8x with this
    library's own copies. Raising both thresholds keeps buffers below 32 MB
    in the heap, and still returns free memory above 64 MB at the heap's top.
    Set the dask config ``adadamp.tune-worker-malloc`` to False to leave the
    worker's malloc alone. Does nothing where libc is not glibc.

    Returns
    -------
    bool
        Whether the thresholds were set.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
        return bool(libc.mallopt(m_mmap_threshold, int(mmap_bytes))
                    and libc.mallopt(m_trim_threshold, int(trim_bytes)))
    except (OSError, AttributeError):
        return False
