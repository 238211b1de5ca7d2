"""Benchmark 7c: the simulator calibrated from a fit, against measured fits.

One schedule (GeoDamp from 64 examples, x2 every epoch, grads_per_worker 64:
1, 2, 4 and 8 chunks per update) fits the same seeded data on LocalClusters
of 1, 2, 3 and 4 one-thread workers; with an int ``random_state`` every fit
makes the same updates. ``Cluster.from_history`` measures the cluster model
from the 2-worker fit's own history (compute per example and per call,
transfers, the overhead per update and per worker), then predicts every fit
from its batch sizes on ``max_workers`` workers with ``concurrency`` the
machine's cores (workers beyond the cores share them). Measured: the sum of
the fit's epoch durations (skorch's ``dur``: training, without placing the
data). The model is the 3.7M-parameter MLP, so compute and the weights'
bytes both count.

Goal: every prediction within 15% of the measured time.

    python benchmarks/simulate_calibrated.py [--quick]
"""
import os
import sys
import time
import warnings

from common import local_cluster, main, model_kwargs, n_params, random_data, table
from dask_adadamp import DaskClassifier
from dask_adadamp.dampers import GeoDamp
from dask_adadamp.simulate import Cluster, simulate

TITLE = "7c. The simulator calibrated from a fit, against measured fits"
MODEL = "mlp-3.7M"
GRADS_PER_WORKER = 64
CALIBRATE_ON = 2
WORKERS = (1, 2, 3, 4)
CORES = os.cpu_count()


def fit(n_workers, X, y, epochs):
    """One fit on a fresh cluster, warmed up first by a short fit on every
    worker: each worker's first call builds the model and wakes torch, a
    cost the simulator does not model."""
    with local_cluster(n_workers) as client:
        DaskClassifier(**model_kwargs(MODEL), grads_per_worker=GRADS_PER_WORKER,
                       batch_size=GRADS_PER_WORKER * n_workers, max_epochs=1,
                       client=client, train_split=None, verbose=0).fit(X[:1024], y[:1024])
        start = time.perf_counter()
        net = DaskClassifier(**model_kwargs(MODEL), grads_per_worker=GRADS_PER_WORKER,
                             batch_size=GeoDamp(initial=64, factor=2, delay=1),
                             max_epochs=epochs, lr=0.01, client=client,
                             random_state=0, train_split=None, verbose=0).fit(X, y)
        wall = time.perf_counter() - start
    return net, wall, sum(e["dur"] for e in net.history)


def run(quick=False):
    epochs, n, repeats = (3, 1024, 1) if quick else (4, 4096, 2)
    X, y = random_data(n, 784)
    load = os.getloadavg()[0]
    fits = {}
    # Worker counts in turn, each repeat once more: the machine is shared, so
    # its load drifts; the fastest of each is the least disturbed.
    for _ in range(repeats):
        for workers in WORKERS:
            net, wall, measured = fit(workers, X, y, epochs)
            print(f"{workers} workers: {measured:.1f} s", flush=True)
            if workers not in fits or measured < fits[workers]["measured_s"]:
                fits[workers] = {"net": net, "fit_s": wall, "measured_s": measured}
    base = fits[CALIBRATE_ON]["net"]
    cluster = Cluster.from_history(base)
    rows = []
    for workers, f in fits.items():
        target = Cluster.from_history(base, max_workers=workers,
                                      concurrency=min(workers, CORES))
        with warnings.catch_warnings():  # the cluster's size binds, as it should
            warnings.simplefilter("ignore", UserWarning)
            sim = simulate({"fit": f["net"]}, n_params(MODEL), target).loc["fit"]
        predicted = 60 * float(sim["minutes"])
        rows.append({"workers": workers, "model_updates": int(sim["model_updates"]),
                     "measured_s": f["measured_s"], "fit_s": f["fit_s"],
                     "predicted_s": predicted,
                     "compute_s": 60 * float(sim["compute_minutes"]),
                     "communication_s": 60 * float(sim["communication_minutes"]),
                     "overhead_s": 60 * float(sim["overhead_minutes"]),
                     "error": predicted / f["measured_s"] - 1,
                     "calibration": workers == CALIBRATE_ON})
    return {"epochs": epochs, "n_train": n, "cores": CORES, "rows": rows,
            "repeats": repeats, "load_before": load,
            "cluster": {k: (v if not isinstance(v, float) else float(v))
                        for k, v in vars(cluster).items()}}


def goals(result):
    predicted = [r for r in result["rows"] if not r["calibration"]]
    worst = max(predicted, key=lambda r: abs(r["error"]))
    return [("the simulator calibrated on a 2-worker fit predicts the 1-, 3- and 4-worker "
             "fits' wall-clock time within 15%",
             all(abs(r["error"]) <= 0.15 for r in predicted),
             f"worst {100 * worst['error']:+.0f}% at {worst['workers']} workers "
             "(simulator, calibrated)")]


def markdown(result):
    c = result["cluster"]
    lines = [
        f"GeoDamp (64 examples, x2 every epoch), {MODEL} ({n_params(MODEL):,} "
        f"parameters), {result['n_train']} random rows, {result['epochs']} epochs, "
        f"grads_per_worker {GRADS_PER_WORKER}, on LocalClusters of one-thread workers "
        f"on this {result['cores']}-core machine (shared with other work). Calibrated "
        f"on the {CALIBRATE_ON}-worker fit's history (``Cluster.from_history``): "
        f"grad_time {1e6 * c['grad_time']:.0f} us per example, task_cost "
        f"{1e3 * c['task_cost']:.1f} ms, latency {1e3 * c['latency']:.2f} ms, bandwidth "
        f"{c['bandwidth'] / 1e9:.2f} GB/s, overhead {1e3 * c['overhead']:.1f} ms + "
        f"{1e3 * c['overhead_per_worker']:.1f} ms per worker; each fit predicted on "
        f"max_workers = its workers, concurrency = min(workers, {result['cores']} cores). "
        f"Measured: the sum of the epochs' ``dur``, the fastest of {result['repeats']} "
        f"fits (worker counts in turn), each on a fresh cluster warmed up by a short fit "
        f"(load average {result['load_before']:.1f} before).",
        "",
        table(["workers", "model updates", "measured s", "predicted s (compute + "
               "communication + overhead)", "error", "whole fit s"],
              [[f"{r['workers']}" + (" (calibration)" if r["calibration"] else ""),
                r["model_updates"], f"{r['measured_s']:.1f}",
                f"{r['predicted_s']:.1f} ({r['compute_s']:.1f} + "
                f"{r['communication_s']:.1f} + {r['overhead_s']:.1f})",
                f"{100 * r['error']:+.0f}%", f"{r['fit_s']:.1f}"]
               for r in result["rows"]])]
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.modules[__name__])
