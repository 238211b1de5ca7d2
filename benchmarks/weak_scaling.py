"""Benchmark 2: weak scaling of the per-update overhead.

The gradient compute is replaced by a fixed sleep (as the SciPy 2021
AdaDamp-on-Dask paper simulated it) while the model keeps a real payload:
``SleepNet`` carries as many parameters as the 270k MLP, so the weights out
and the gradient sums back are full size. With ``B = P * grads_per_worker``
every worker computes one chunk per update; a flat line means the update cost
does not grow with the cluster. Each cluster size runs both ways of calling
the workers side by side: direct (the client calls every worker) and tree
(the client calls one, the calls and partial sums pass through the others).
From the fit's history: the median bytes the client sends (weights) and
receives (gradient sums) per update.

    python benchmarks/weak_scaling.py [--quick]
"""
import sys
import time

import dask
import numpy as np
import torch
from common import (N_CLASSES, UpdateClock, local_cluster, main, median_ms, n_params,
                    random_data, table)
from dask_adadamp import DaskClassifier

TITLE = "2. Weak scaling of the overhead"
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


# adadamp.tree-workers for each: always direct, always the tree, the default
MODES = {"direct": None, "tree": 1, "auto": "auto"}


def update_times(n_workers, updates, repeats=2):
    """Per-update seconds and client bytes of each mode, the modes' fits
    interleaved on one cluster (``repeats`` fits each)."""
    batch = n_workers * GRADS_PER_WORKER
    seconds = {mode: [] for mode in MODES}
    client_bytes = {mode: {"bytes_out": [], "bytes_in": []} for mode in MODES}
    with local_cluster(n_workers) as client:
        for _ in range(repeats):
            for mode, tree_workers in MODES.items():
                clock = UpdateClock()
                est = DaskClassifier(
                    SleepNet, module__payload=n_params("mlp-270k"),
                    criterion=torch.nn.CrossEntropyLoss, lr=0.0, batch_size=batch,
                    grads_per_worker=GRADS_PER_WORKER, max_epochs=1, train_split=None,
                    random_state=0, verbose=0, client=client,
                    callbacks=[("clock", clock)])
                with dask.config.set({"adadamp.tree-workers": tree_workers}):
                    est.fit(*random_data(batch * updates, 784))
                seconds[mode] += list(clock.seconds())
                for b in est.history[0, "batches"][2:]:  # as clock: no warm-up
                    for key in ("bytes_out", "bytes_in"):
                        client_bytes[mode][key].append(b[key])
    return seconds, {mode: {k: float(np.median(v)) for k, v in kb.items()}
                     for mode, kb in client_bytes.items()}


def run(quick=False):
    updates = 10 if quick else 25
    rows = []
    for n_workers in (1, 2, 4, 8, 16):
        seconds, client_bytes = update_times(n_workers, updates)
        row = {"workers": n_workers, "batch": n_workers * GRADS_PER_WORKER}
        for mode in MODES:
            row[f"{mode}_ms"] = median_ms(seconds[mode])
            row.update({f"{mode}_{k}": v for k, v in client_bytes[mode].items()})
        row["update_ms"] = row["auto_ms"]
        row["overhead_ms"] = row["update_ms"] - 1e3 * SLEEP_S
        row["tree_vs_direct"] = row["tree_ms"] / row["direct_ms"]
        rows.append(row)
        print(rows[-1], flush=True)
    for row in rows:
        row["vs_1_worker"] = row["update_ms"] / rows[0]["update_ms"]
    return {"sleep_ms": 1e3 * SLEEP_S, "grads_per_worker": GRADS_PER_WORKER,
            "params": n_params("mlp-270k"), "updates": updates, "rows": rows}


def goals(result):
    """16 workers against 1, on the path the estimator takes by default."""
    rows = {r["workers"]: r for r in result["rows"]}
    many, one = rows[max(rows)], rows[1]
    ratio = many["update_ms"] / one["update_ms"]
    return [(f"weak scaling: {max(rows)} workers <= 1.3x 1 worker", ratio <= 1.3,
             f"{ratio:.2f}x = {many['update_ms']:.1f} ms / {one['update_ms']:.1f} ms "
             "(weak scaling)")]


def markdown(result):
    lines = [f"Each chunk's forward sleeps {result['sleep_ms']:.0f} ms; payload "
             f"{result['params']:,} float32 parameters; grads_per_worker "
             f"{result['grads_per_worker']}; medians of 2 x {result['updates'] - 2} "
             "updates per mode, the modes' fits interleaved on one cluster.", "",
             table(["workers", "batch", "direct (ms)", "tree (ms)", "tree / direct",
                    "update, default 'auto' (ms)", "overhead = update - sleep (ms)",
                    "vs 1 worker", "client MB out: direct / tree / auto",
                    "client MB in: direct / tree / auto"],
                   [[r["workers"], r["batch"], f"{r['direct_ms']:.1f}",
                     f"{r['tree_ms']:.1f}", f"{r['tree_vs_direct']:.2f}x",
                     f"{r['update_ms']:.1f}", f"{r['overhead_ms']:.1f}",
                     f"{r['vs_1_worker']:.2f}x",
                     " / ".join(_mb(r[f"{m}_bytes_out"]) for m in MODES),
                     " / ".join(_mb(r[f"{m}_bytes_in"]) for m in MODES)]
                    for r in result["rows"]]), "",
             "direct: the client calls every worker; tree: the client calls one "
             "worker and the calls and partial sums pass through the others; auto "
             "(the default of the dask config `adadamp.tree-workers`): each fit "
             "times both on its first rounds and keeps the faster. MB out: weight "
             "bytes the client sent per update; MB in: gradient bytes it received; "
             "medians from the fits' history, 10^6 bytes."]
    return "\n".join(lines)


def _mb(n):
    return "-" if n is None else f"{n / 1e6:.2f}"


if __name__ == "__main__":
    main(sys.modules[__name__])
