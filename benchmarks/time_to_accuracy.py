"""Benchmark 3: wall-clock time and model updates to a target test accuracy.

DaskClassifier on a 2-worker local cluster against skorch's
NeuralNetClassifier training the same module in one process, on MNIST-1D
(generated offline by the ``mnist1d`` package). Each run stops at the first
epoch whose test accuracy reaches the target.

To add a schedule, add one entry to ``CONFIGS``.

    python benchmarks/time_to_accuracy.py [--quick]
"""
import time

import numpy as np
import torch
from distributed import Client, LocalCluster
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback

from dask_adadamp import DaskClassifier
from dask_adadamp.dampers import GeoDamp, NoiseScaleDamp
from dask_adadamp.datasets import mnist1d
from dask_adadamp.models import MLP

from common import main, table

TARGET = 0.65
MAX_EPOCHS = 100
COMMON = dict(module=MLP, module__n_features=40, module__hidden=(256, 256),
              criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
              lr=0.05, optimizer__momentum=0.9, train_split=None, verbose=0)

# name -> (estimator class, extra parameters). One line per configuration.
CONFIGS = {
    "skorch, 1 process, batch 64": (NeuralNetClassifier, dict(batch_size=64)),
    "dask-adadamp, batch 64": (DaskClassifier, dict(batch_size=64, grads_per_worker=32)),
    "dask-adadamp, batch 512": (DaskClassifier, dict(batch_size=512, grads_per_worker=256,
                                                     lr=0.2)),
    "dask-adadamp, GeoDamp 32 x2 every 3 epochs": (DaskClassifier, dict(
        batch_size=GeoDamp(initial=32, factor=2, delay=3), grads_per_worker=64, lr=0.1)),
    "dask-adadamp, NoiseScaleDamp from 32": (DaskClassifier, dict(
        batch_size=NoiseScaleDamp(initial=32, scale=0.2), grads_per_worker=64, lr=0.1)),
}


class StopAtAccuracy(Callback):
    """Score the test set after every epoch; stop at the target (if any)."""

    def __init__(self, X_test, y_test, target):
        self.X_test, self.y_test, self.target = X_test, y_test, target

    def on_train_begin(self, net, **kwargs):
        self.start = time.perf_counter()

    def on_epoch_end(self, net, **kwargs):
        accuracy = float(np.mean(net.predict(self.X_test) == self.y_test))
        net.history.record("test_acc", accuracy)
        net.history.record("elapsed", time.perf_counter() - self.start)
        if self.target is not None and accuracy >= self.target:
            raise KeyboardInterrupt  # skorch's way to end a fit early


def run(quick=False):
    X, X_test, y, y_test = mnist1d()
    target = 0.5 if quick else TARGET
    rows = []
    with LocalCluster(n_workers=2, threads_per_worker=1,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        for name, (cls, extra) in CONFIGS.items():
            params = {**COMMON, **extra, "max_epochs": MAX_EPOCHS}
            if cls is DaskClassifier:
                params.update(client=client, random_state=0)
            else:
                torch.manual_seed(0)
            stop = StopAtAccuracy(X_test, y_test, target)
            est = cls(callbacks=[("stop", stop)], **params).fit(X, y)
            h = est.history
            reached = h[-1, "test_acc"] >= target
            updates = sum(len([b for b in e["batches"] if "train_loss" in b]) for e in h)
            rows.append({"config": name, "reached": bool(reached),
                         "test_acc": h[-1, "test_acc"], "epochs": len(h),
                         "model_updates": updates, "seconds": h[-1, "elapsed"]})
            print(rows[-1], flush=True)
    return {"dataset": "MNIST-1D (4000 train, 1000 test)", "target": target,
            "rows": rows}


def markdown(result):
    lines = [f"{result['dataset']}; target test accuracy {result['target']:.2f}; "
             "MLP 40-256-256-10, SGD with momentum 0.9; 2 local workers.", "",
             table(["configuration", "reached", "test acc", "epochs", "model updates",
                    "seconds"],
                   [[r["config"], "yes" if r["reached"] else "no", f"{r['test_acc']:.3f}",
                     r["epochs"], r["model_updates"], f"{r['seconds']:.1f}"]
                    for r in result["rows"]])]
    return "\n".join(lines)


if __name__ == "__main__":
    main(run, markdown)
