"""What the dashboard monitoring costs a fit, side by side.

The same seeded fit (small batches, so that updates are as short as they get
and the monitoring's share is as large as it gets) runs alternately with the
dashboard's FitMonitor on and off, on one cluster. Off means the monitor is
disabled as when its plugin cannot be registered: every call returns at once.
Reported: mean wall-clock ms per update of each run (a mean, so that the
updates that also send a message count), and the median of the paired
differences.

    python benchmarks/monitor_cost.py [--pairs 4]
"""
import argparse
from unittest import mock

import numpy as np
import torch
from distributed import Client, LocalCluster

from dask_adadamp import DaskClassifier, dashboard
from dask_adadamp.datasets import digits
from dask_adadamp.models import MLP

from common import UpdateClock, table


def fit_ms_per_update(X, y, monitored):
    clock = UpdateClock()
    est = DaskClassifier(MLP, module__n_features=64, module__hidden=32,
                         criterion=torch.nn.CrossEntropyLoss, lr=0.05,
                         batch_size=16, grads_per_worker=8, max_epochs=2,
                         train_split=None, random_state=0, verbose=0,
                         callbacks=[clock])
    if monitored:
        est.fit(X, y)
    else:
        with mock.patch.object(dashboard, "_ensure_plugin", lambda client: False):
            est.fit(X, y)
    return 1e3 * float(np.mean(clock.seconds())), len(clock.starts)


def main(pairs=4):
    X, _, y, _ = digits(random_state=0)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0",
                      silence_logs=40) as cluster, Client(cluster):
        fit_ms_per_update(X, y, True)  # warm-up: workers import torch
        rows, diffs = [], []
        for i in range(pairs):
            on, n = fit_ms_per_update(X, y, True)
            off, _ = fit_ms_per_update(X, y, False)
            diffs.append(on - off)
            rows.append((i + 1, n, f"{on:.2f}", f"{off:.2f}", f"{on - off:+.2f}"))
    print(table(["pair", "updates per fit", "ms/update, monitored",
                 "ms/update, off", "difference"], rows))
    print(f"\nmedian difference: {np.median(diffs):+.2f} ms per update")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4)
    main(parser.parse_args().pairs)
