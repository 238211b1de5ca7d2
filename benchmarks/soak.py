"""Benchmark: 200 fits in a row on one client; does any process grow?

A scheduler and two workers (1 thread each, no nanny) run as processes of
their own, so each resident memory (RSS) is its own process's. One client
runs 200 small fits (``--quick``: 40) with AdaDamp, its loss estimated on
a quarter of the rows, on 1,000 x 64 random rows, a 2-layer MLP, 2 epochs,
a validation split, the dashboard page fed; after every 20 fits (10) each
process collects its garbage and reports its RSS.
Growth is counted after the warm-up (the first two samples): the goal
(``goals``) is under 1 MiB per 20 fits in every process.

A tool, not a section of run_all.py (about 20 minutes; its results are in
``results/soak.md``).

    python benchmarks/soak.py [--quick]
"""
import gc
import os
import sys
import time

import cloudpickle
import numpy as np
import psutil
import torch

from dask_adadamp import DaskClassifier
from dask_adadamp.dampers import AdaDamp
from dask_adadamp.models import MLP

from common import MIB, main, process_cluster, table

TITLE = "Soak: fits in a row on one client"


def rss_after_gc():
    gc.collect()
    return psutil.Process(os.getpid()).memory_info().rss / MIB


# The scheduler and the workers cannot import this script: sent by value.
if __name__ != "__main__":
    cloudpickle.register_pickle_by_value(sys.modules[__name__])


def run(quick=False, fits=200, every=20):
    if quick:
        fits, every = 40, 10
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 64)).astype("float32")
    y = (X[:, :8].sum(axis=1) > 0).astype("int64")
    samples = []
    with process_cluster(2) as cluster:
        client = cluster.client
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


def goals(result):
    """Every process's growth after the warm-up, per 20 fits."""
    growth = result["growth_mib_per_every"]
    worst = max(growth, key=growth.get)
    per_20 = growth[worst] * 20 / result["every"]
    return [("no process grows by 1 MiB or more per 20 fits after the warm-up",
             per_20 < 1, f"largest growth {per_20:+.2f} MiB per 20 fits, {worst} (soak)")]


if __name__ == "__main__":
    main(sys.modules[__name__])
