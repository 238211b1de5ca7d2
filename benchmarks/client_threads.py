"""The client's threads during training: ``adadamp.client-threads`` on and off.

The same fit (270k MLP, batch 512, 2 local workers, 100 updates after a
warm-up fit) with the client left at torch's and numpy's thread settings
(``None``) and held to one thread (``1``, the default), side by side. For
each it prints the time per update and the CPU seconds of every busy thread
of the client process during the fit (from ``/proc``; Linux only): a thread
that is not Python's (no name) and busy is a torch or BLAS pool thread.

A tool, not a section of run_all.py (``--quick`` changes nothing: it is
short); its results are in ``results/client_threads.md``.

    python benchmarks/client_threads.py
"""
import os
import sys
import threading
import time

import dask
import torch

from common import local_cluster, main, model_kwargs, random_data, table
from dask_adadamp import DaskClassifier

TITLE = "The client's threads during training"
UPDATES = 100


def cpu_seconds():
    """CPU seconds of each thread of this process, by thread id."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[tid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def one(client, threads, X, y):
    est = DaskClassifier(**model_kwargs("mlp-270k"), criterion=torch.nn.CrossEntropyLoss,
                         lr=0.01, batch_size=512, grads_per_worker=256, max_epochs=1,
                         train_split=None, random_state=0, verbose=0, client=client)
    with dask.config.set({"adadamp.client-threads": threads}):
        est.fit(X, y)
        names = {str(t.native_id): t.name for t in threading.enumerate()}
        before = cpu_seconds()
        start = time.perf_counter()
        est.partial_fit(X, y)
        seconds = time.perf_counter() - start
        after = cpu_seconds()
    busy = sorted(((after[t] - before.get(t, 0.0), names.get(t, "(not Python's)"))
                   for t in after), reverse=True)
    return {"threads": threads, "update_ms": 1e3 * seconds / UPDATES, "seconds": seconds,
            "busy": [(name, cpu) for cpu, name in busy if cpu > 0.05]}


def run(quick=False):
    X, y = random_data(512 * UPDATES, 784)
    with local_cluster(2) as client:
        return {"rows": [one(client, threads, X, y) for threads in (None, 1)]}


def markdown(result):
    return table(["adadamp.client-threads", "ms per update",
                  "client threads' CPU seconds during the fit"],
                 [[str(r["threads"]), f"{r['update_ms']:.1f}",
                   ", ".join(f"{name}: {cpu:.2f}" for name, cpu in r["busy"])
                   + f" (of {r['seconds']:.2f} s)"]
                  for r in result["rows"]])


if __name__ == "__main__":
    main(sys.modules[__name__])
