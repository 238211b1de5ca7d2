"""Benchmark 2: weak scaling of the per-update overhead.

The gradient compute is replaced by a fixed sleep (as the SciPy 2021
AdaDamp-on-Dask paper simulated it) while the model keeps a real payload:
``SleepNet`` carries as many parameters as the 270k MLP, so the weights out
and the gradient sums back are full size. With ``B = P * grads_per_worker``
every worker computes one chunk per update; a flat line means the update cost
does not grow with the cluster. From the fit's history: the median bytes the
client sends (weights, one copy per worker called) and receives (gradient
sums) per update.

    python benchmarks/weak_scaling.py [--quick]
"""
import time

import numpy as np
import torch
from distributed import Client, LocalCluster

from dask_adadamp import DaskClassifier

from common import N_CLASSES, UpdateClock, main, median_ms, n_params, random_data, table

SLEEP_S = 0.05
GRADS_PER_WORKER = 64


class SleepNet(torch.nn.Module):
    """A linear model that sleeps in its forward pass and carries an unused
    payload of parameters, so its weights weigh what a real model's do."""

    def __init__(self, n_features=784, payload=269_322, sleep=SLEEP_S):
        super().__init__()
        self.linear = torch.nn.Linear(n_features, N_CLASSES)
        self.payload = torch.nn.Parameter(torch.zeros(payload - n_features * N_CLASSES - N_CLASSES))
        self.sleep = sleep

    def forward(self, X):
        time.sleep(self.sleep)
        return self.linear(X)


def update_time(n_workers, updates):
    batch = n_workers * GRADS_PER_WORKER
    clock = UpdateClock()
    with LocalCluster(n_workers=n_workers, threads_per_worker=1,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        est = DaskClassifier(
            SleepNet, module__payload=n_params("mlp-270k"),
            criterion=torch.nn.CrossEntropyLoss, lr=0.0, batch_size=batch,
            grads_per_worker=GRADS_PER_WORKER, max_epochs=1, train_split=None,
            random_state=0, verbose=0, client=client,
            callbacks=[("clock", clock)])
        est.fit(*random_data(batch * updates, 784))
    batches = est.history[0, "batches"][2:]  # as clock.seconds(): no warm-up
    client_bytes = {key: float(np.median([b[key] for b in batches]))
                    for key in ("bytes_out", "bytes_in")}
    return clock.seconds(), client_bytes


def run(quick=False):
    updates = 10 if quick else 25
    rows = []
    for n_workers in (1, 2, 4, 8, 16):
        seconds, client_bytes = update_time(n_workers, updates)
        rows.append({"workers": n_workers, "batch": n_workers * GRADS_PER_WORKER,
                     "update_ms": median_ms(seconds),
                     "overhead_ms": median_ms(seconds) - 1e3 * SLEEP_S,
                     **client_bytes})
        print(rows[-1], flush=True)
    for row in rows:
        row["vs_1_worker"] = row["update_ms"] / rows[0]["update_ms"]
    return {"sleep_ms": 1e3 * SLEEP_S, "grads_per_worker": GRADS_PER_WORKER,
            "params": n_params("mlp-270k"), "updates": updates, "rows": rows}


def markdown(result):
    lines = [f"Each chunk's forward sleeps {result['sleep_ms']:.0f} ms; payload "
             f"{result['params']:,} float32 parameters; grads_per_worker "
             f"{result['grads_per_worker']}; medians of {result['updates'] - 2} updates.", "",
             table(["workers", "batch", "update (ms)", "overhead = update - sleep (ms)",
                    "vs 1 worker", "client MB out per update",
                    "client MB in per update"],
                   [[r["workers"], r["batch"], f"{r['update_ms']:.1f}",
                     f"{r['overhead_ms']:.1f}", f"{r['vs_1_worker']:.2f}x",
                     _mb(r.get("bytes_out")), _mb(r.get("bytes_in"))]
                    for r in result["rows"]]), "",
             "MB out: weight bytes the client sent per update (one copy per worker "
             "called); MB in: gradient bytes it received; medians from the fit's "
             "history, 10^6 bytes."]
    return "\n".join(lines)


def _mb(n):
    return "-" if n is None else f"{n / 1e6:.2f}"


if __name__ == "__main__":
    main(run, markdown)
