"""What the dashboard monitoring costs a fit, side by side.

The same seeded fit (small batches, so that updates are as short as they get
and the monitoring's share is as large as it gets) runs alternately with the
dashboard's FitMonitor on and off, on one cluster. Off means the monitor is
disabled as when its plugin cannot be registered: every call returns at once.
Reported: mean wall-clock ms per update of each run (a mean, so that the
updates that also send a message count), and the median of the paired
differences.

Goal (``goals``): the monitored fit's median cost is within 5% of an update.

    python benchmarks/monitor_cost.py [--quick]
"""
import sys
from unittest import mock

import numpy as np
import torch

from common import UpdateClock, local_cluster, main, table
from dask_adadamp import DaskClassifier, _monitor
from dask_adadamp.datasets import digits
from dask_adadamp.models import MLP

TITLE = "8. What the dashboard's monitoring costs a fit"
PAIRS, QUICK_PAIRS = 5, 2


def fit_ms_per_update(X, y, monitored, client):
    clock = UpdateClock()
    est = DaskClassifier(MLP, module__n_features=64, module__hidden=32,
                         criterion=torch.nn.CrossEntropyLoss, lr=0.05,
                         batch_size=16, grads_per_worker=8, max_epochs=2,
                         train_split=None, random_state=0, verbose=0, client=client,
                         callbacks=[clock])
    if monitored:
        est.fit(X, y)
    else:
        # Where FitMonitor looks it up (dask_adadamp.dashboard re-exports
        # only the public names).
        with mock.patch.object(_monitor, "_ensure_plugin", lambda client: False):
            est.fit(X, y)
    return 1e3 * float(np.mean(clock.seconds())), len(clock.starts)


def run(quick=False):
    X, _, y, _ = digits(random_state=0)
    with local_cluster(2) as client:
        fit_ms_per_update(X, y, True, client)  # warm-up: workers import torch
        rows = []
        for i in range(QUICK_PAIRS if quick else PAIRS):
            on, n = fit_ms_per_update(X, y, True, client)
            off, _ = fit_ms_per_update(X, y, False, client)
            rows.append({"pair": i + 1, "updates": n, "on_ms": on, "off_ms": off})
    diffs = [r["on_ms"] - r["off_ms"] for r in rows]
    return {"rows": rows, "median_diff_ms": float(np.median(diffs)),
            "median_off_ms": float(np.median([r["off_ms"] for r in rows]))}


def goals(result):
    share = result["median_diff_ms"] / result["median_off_ms"]
    return [("the dashboard's monitoring costs a fit <= 5% per update (median of "
             "paired fits)", share <= 0.05,
             f"{result['median_diff_ms']:+.2f} ms of {result['median_off_ms']:.1f} ms "
             f"({100 * share:+.1f}%; monitoring cost)")]


def markdown(result):
    return "\n".join([
        "The digits (1437 rows), MLP 64-32-10, batch 16, grads_per_worker 8, 2 epochs "
        "on 2 local workers; fits with the monitor on and off alternate. ms/update: "
        "mean wall-clock per update of one fit.", "",
        table(["pair", "updates per fit", "ms/update, monitored", "ms/update, off",
               "difference"],
              [[r["pair"], r["updates"], f"{r['on_ms']:.2f}", f"{r['off_ms']:.2f}",
                f"{r['on_ms'] - r['off_ms']:+.2f}"] for r in result["rows"]]), "",
        f"Median difference: {result['median_diff_ms']:+.2f} ms per update."])


if __name__ == "__main__":
    main(sys.modules[__name__])
