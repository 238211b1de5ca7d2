"""What this machine allows an update, whatever the library does.

Three measurements behind docs/performance.md:

1. *comm*: the round trip of a do-nothing direct call carrying the 270k
   MLP's weights (1.1 MB) to 2 workers and a gradient-sized reply back,
   through Dask's TCP comms (the same handler mechanism as the update path).
2. *malloc*: one worker's chunk (256 rows of the 270k MLP, forward and
   backward, one thread) in a process started as Dask's nanny starts
   workers (``MALLOC_TRIM_THRESHOLD_=65536``), with and without the glibc
   thresholds that ``dask_adadamp._extension.keep_buffers_in_heap`` sets.
3. *together*: the same chunk in two processes at once against one alone
   (two single-threaded workers on this machine's two cores).

A tool, not a section of run_all.py; its results are in
``results/floors.md``.

    python benchmarks/floors.py [--quick]
"""
import asyncio
import os
import subprocess
import sys
import time

import numpy as np
from distributed import WorkerPlugin
from distributed.protocol.serialize import to_serialize

from common import local_cluster, main, median_ms, table

TITLE = "What this machine allows an update"
N_PARAMS = 269_322
CHUNK = """
import sys, time, numpy as np, torch
torch.set_num_threads(1)
if sys.argv[1] == "tuned":
    from dask_adadamp._extension import keep_buffers_in_heap
    keep_buffers_in_heap()
from dask_adadamp.models import MLP
m = MLP(784, 10, (256, 256))
rng = np.random.default_rng(0)
X = rng.normal(size=(4096, 784)).astype("float32"); y = rng.integers(0, 10, 4096)
ts = []
for i in range(80):
    rows = np.sort(rng.permutation(4096)[:256])
    t = time.perf_counter()
    m.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(m(torch.from_numpy(X[rows])),
                                      torch.from_numpy(y[rows])).backward()
    ts.append(time.perf_counter() - t)
print(float(np.median(ts[10:])))
"""


class Echo(WorkerPlugin):
    name = "floors-echo"

    def setup(self, worker):
        async def echo(weights=None, back=0):
            return {"g": to_serialize(np.ones(back, "float32"))}
        worker.handlers["floors_echo"] = echo


def comm(updates=60):
    with local_cluster(2) as client:
        client.register_plugin(Echo())
        addrs = sorted(client.nthreads())
        w = np.random.default_rng(0).random(N_PARAMS).astype("float32")
        rows = {}
        for n in (1, 2):
            times = []
            for _ in range(updates):
                start = time.perf_counter()
                client.sync(lambda: asyncio.gather(*[
                    client.rpc(a).floors_echo(weights=to_serialize(w), back=N_PARAMS)
                    for a in addrs[:n]]))
                times.append(time.perf_counter() - start)
            rows[n] = median_ms(times[10:])
    return rows


def chunk(mode, env_extra, copies=1):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_extra}
    procs = [subprocess.Popen([sys.executable, "-c", CHUNK, mode], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(copies)]
    return [1e3 * float(p.communicate(timeout=300)[0]) for p in procs]


def run(quick=False):
    nanny = {"MALLOC_TRIM_THRESHOLD_": "65536"}
    return {
        "comm_ms": comm(20 if quick else 60),
        "chunk_plain_ms": chunk("plain", {})[0],
        "chunk_nanny_env_ms": chunk("plain", nanny)[0],
        "chunk_nanny_env_tuned_ms": chunk("tuned", nanny)[0],
        "chunk_two_at_once_ms": chunk("tuned", nanny, copies=2),
    }


def markdown(r):
    return "\n".join([
        table(["measurement", "median ms"], [
            ["do-nothing call, 1.1 MB out and back, 1 worker", f"{r['comm_ms'][1]:.1f}"],
            ["do-nothing call, 1.1 MB out and back, 2 workers at once",
             f"{r['comm_ms'][2]:.1f}"],
            ["chunk (256 rows, 270k MLP), plain process", f"{r['chunk_plain_ms']:.1f}"],
            ["chunk, MALLOC_TRIM_THRESHOLD_=65536 (as Dask's nanny)",
             f"{r['chunk_nanny_env_ms']:.1f}"],
            ["chunk, same env, keep_buffers_in_heap()", f"{r['chunk_nanny_env_tuned_ms']:.1f}"],
            ["chunk, two processes at once (each)",
             ", ".join(f"{t:.1f}" for t in r["chunk_two_at_once_ms"])],
        ]),
    ])


if __name__ == "__main__":
    main(sys.modules[__name__])
