"""Benchmark: 200 fits in a row on one client; does any process grow?

A scheduler and two workers (1 thread each, no nanny) run as processes of
their own, so each resident memory (RSS) is its own process's. One client
runs 200 small fits (``--quick``: 40) with AdaDamp, its loss estimated on
a quarter of the rows, on 1,000 x 64 random rows, a 2-layer MLP, 2 epochs,
a validation split, the dashboard page fed; after every 20 fits (10) each
process collects its garbage and reports its RSS.
Growth is counted after the warm-up (the first two samples): the goal is
under 1 MiB per 20 fits in every process.

    python benchmarks/soak.py [--quick]
"""
import gc
import os
import subprocess
import sys
import tempfile
import time

import cloudpickle
import numpy as np
import psutil
import torch
from distributed import Client

from dask_adadamp import DaskClassifier
from dask_adadamp.dampers import AdaDamp
from dask_adadamp.models import MLP

from common import main, stop_processes, table

MIB = 2**20
START_TIMEOUT = 60


def rss_after_gc():
    gc.collect()
    return psutil.Process(os.getpid()).memory_info().rss / MIB


# The scheduler and the workers cannot import this script: sent by value.
if __name__ != "__main__":
    cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _start(tmp, args, name, procs):
    log = open(os.path.join(tmp, f"{name}.log"), "w")
    # cwd without a dask_adadamp in it: `python -m` finds the installed one
    procs.append(subprocess.Popen([sys.executable, "-m", *args], cwd=tmp,
                                  stdout=log, stderr=subprocess.STDOUT))


def run(quick=False, fits=200, every=20):
    if quick:
        fits, every = 40, 10
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 64)).astype("float32")
    y = (X[:, :8].sum(axis=1) > 0).astype("int64")
    procs, samples = [], []
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        file = os.path.join(tmp, "scheduler.json")
        try:
            _start(tmp, ["distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                         "--port", "0", "--dashboard-address", ":0",
                         "--scheduler-file", file], "scheduler", procs)
            deadline = time.monotonic() + START_TIMEOUT
            while not os.path.exists(file) and time.monotonic() < deadline:
                time.sleep(0.1)  # another process writes it
            for i in range(2):
                _start(tmp, ["distributed.cli.dask_worker", "--scheduler-file", file,
                             "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny",
                             "--no-dashboard", "--memory-limit", "0"], f"worker-{i}", procs)
            with Client(scheduler_file=file, timeout=START_TIMEOUT) as client:
                client.wait_for_workers(2, timeout=START_TIMEOUT)
                start = time.perf_counter()
                for n in range(1, fits + 1):
                    DaskClassifier(
                        MLP, module__n_features=64, module__n_classes=2,
                        module__hidden=(32, 32), criterion=torch.nn.CrossEntropyLoss,
                        lr=0.1, batch_size=AdaDamp, batch_size__initial=32,
                        batch_size__approx=0.25, grads_per_worker=64, max_epochs=2,
                        random_state=n,
                        verbose=0, client=client).fit(X, y)
                    if n % every == 0:
                        workers = sorted(client.run(rss_after_gc).values())
                        samples.append({"fits": n, "client": rss_after_gc(),
                                        "scheduler": client.run_on_scheduler(rss_after_gc),
                                        **{f"worker {i}": w for i, w in enumerate(workers)}})
                        print(samples[-1], flush=True)
                seconds = time.perf_counter() - start
        finally:
            stop_processes(procs)
    names = [k for k in samples[0] if k != "fits"]
    base = samples[1] if len(samples) > 2 else samples[0]
    span = (samples[-1]["fits"] - base["fits"]) / every
    growth = {name: (samples[-1][name] - base[name]) / span for name in names}
    return {"fits": fits, "every": every, "seconds": seconds, "samples": samples,
            "warmup_fits": base["fits"], "growth_mib_per_every": growth}


def markdown(result):
    names = list(result["growth_mib_per_every"])
    every = result["every"]
    lines = [f"{result['fits']} fits in a row on one client ({result['seconds']:.0f} s); "
             f"RSS in MiB after a garbage collection, every {every} fits.", "",
             table(["fits", *names],
                   [[s["fits"], *(f"{s[n]:.1f}" for n in names)] for s in result["samples"]]),
             "", f"Growth after the first {result['warmup_fits']} fits, MiB per {every} fits: "
             + ", ".join(f"{n} {g:+.2f}" for n, g in result["growth_mib_per_every"].items())
             + " (goal: under 1 MiB per 20 fits)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main(run, markdown)
