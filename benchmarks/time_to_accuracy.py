"""Benchmark 3: wall-clock time and model updates to a target test accuracy.

DaskClassifier on a 2-worker local cluster, with constant batches and with
every batch-size schedule of ``dask_adadamp.dampers`` that suits a
classifier trained for a fixed budget of epochs, against skorch's
NeuralNetClassifier training the same module in one process (its training
batches shuffled every epoch, as the Dask runs' are), on MNIST-1D
(generated offline by the ``mnist1d`` package). Each run stops at the first
epoch whose test accuracy reaches the target; ``seconds`` is the wall-clock
time from the start of training to the end of that epoch (its test scoring
included), or None if the target was never reached.

Left out: ``GradientDescent`` (one update per epoch: the whole training
set every time; not a contender at a fixed number of epochs).

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
from dask_adadamp.dampers import (AdaDamp, GeoDamp, GeoDampLR, NoiseScaleDamp, PadaDamp,
                                  RadaDamp)
from dask_adadamp.datasets import mnist1d
from dask_adadamp.models import MLP

from common import main, table

TARGET = 0.65
MAX_EPOCHS = 100
# --quick, to check the script in about a minute: the first 1000 training
# rows, at most 2 epochs, a lower target.
QUICK_ROWS, QUICK_EPOCHS, QUICK_TARGET = 1000, 2, 0.25
B0 = 32  # first batch size of every schedule, as in dampers_mnist1d.py
COMMON = dict(module=MLP, module__n_features=40, module__hidden=(256, 256),
              criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
              lr=0.05, optimizer__momentum=0.9, train_split=None, verbose=0)

# name -> (estimator class, extra parameters). One line per configuration.
#
# The learning rates (``lr``) below are HAND-SET, not tuned: the constant
# batches keep this benchmark's earlier values, and the schedules that
# dampers_mnist1d.py also runs (GeoDamp, NoiseScaleDamp) take its best of
# {0.01, 0.03, 0.1} there, 0.1, which the other schedules from B0 = 32
# reuse. Choosing every run's rate on a validation split is a separate
# issue. PadaDamp's rate and GeoDampLR's decay are hand-set as well:
# PadaDamp grows by 0.1 per update, about as much as GeoDamp's doubling
# over its first 3 epochs (375 updates of 32 on 4000 rows); GeoDampLR
# halves the learning rate where GeoDamp doubles the batch.
CONFIGS = {
    "skorch, 1 process, batch 64": (NeuralNetClassifier, dict(
        batch_size=64, iterator_train__shuffle=True)),
    "dask-adadamp, batch 64": (DaskClassifier, dict(batch_size=64, grads_per_worker=32)),
    "dask-adadamp, batch 512": (DaskClassifier, dict(batch_size=512, grads_per_worker=256,
                                                     lr=0.2)),
    "dask-adadamp, GeoDamp 32 x2 every 3 epochs": (DaskClassifier, dict(
        batch_size=GeoDamp(initial=B0, factor=2, delay=3), grads_per_worker=64, lr=0.1)),
    "dask-adadamp, GeoDampLR 32, lr /2 every 3 epochs": (DaskClassifier, dict(
        batch_size=GeoDampLR(initial=B0, factor=2, delay=3), grads_per_worker=64, lr=0.1)),
    "dask-adadamp, PadaDamp 32 + 0.1 per update": (DaskClassifier, dict(
        batch_size=PadaDamp(initial=B0, rate=0.1), grads_per_worker=64, lr=0.1)),
    "dask-adadamp, AdaDamp from 32": (DaskClassifier, dict(
        batch_size=AdaDamp(initial=B0), grads_per_worker=64, lr=0.1)),
    "dask-adadamp, RadaDamp from 32": (DaskClassifier, dict(
        batch_size=RadaDamp(initial=B0), grads_per_worker=64, lr=0.1)),
    "dask-adadamp, NoiseScaleDamp 0.2 B_noise from 32": (DaskClassifier, dict(
        batch_size=NoiseScaleDamp(initial=B0, scale=0.2, beta=0.99), grads_per_worker=64,
        lr=0.1)),
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
    target, max_epochs = (QUICK_TARGET, QUICK_EPOCHS) if quick else (TARGET, MAX_EPOCHS)
    if quick:
        X, y = X[:QUICK_ROWS], y[:QUICK_ROWS]
    rows = []
    with LocalCluster(n_workers=2, threads_per_worker=1,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        for name, (cls, extra) in CONFIGS.items():
            params = {**COMMON, **extra, "max_epochs": max_epochs}
            if cls is DaskClassifier:
                params.update(client=client, random_state=0)
            else:
                torch.manual_seed(0)
            stop = StopAtAccuracy(X_test, y_test, target)
            est = cls(callbacks=[("stop", stop)], **params).fit(X, y)
            h = est.history
            reached = bool(h[-1, "test_acc"] >= target)
            updates = sum(len([b for b in e["batches"] if "train_loss" in b]) for e in h)
            rows.append({"run": name, "lr": params["lr"], "reached": reached,
                         "test_acc": h[-1, "test_acc"], "epochs": len(h),
                         "model_updates": updates,
                         # wall-clock to the target; None: never reached
                         "seconds": h[-1, "elapsed"] if reached else None,
                         "seconds_in_all": h[-1, "elapsed"]})
            print(rows[-1], flush=True)
    return {"dataset": f"MNIST-1D ({len(X)} train, {len(X_test)} test)", "target": target,
            "max_epochs": max_epochs, "rows": rows}


def markdown(result):
    lines = [f"{result['dataset']}; target test accuracy {result['target']:.2f} "
             f"(at most {result['max_epochs']} epochs); MLP 40-256-256-10, SGD with "
             "momentum 0.9; 2 local workers. Learning rates hand-set, not tuned. "
             "Epochs, updates and test accuracy: at the target, or at the end if never "
             "reached.", "",
             table(["run", "lr", "reached", "test acc", "epochs", "model updates",
                    "seconds to target"],
                   [[r["run"], f"{r['lr']:g}", "yes" if r["reached"] else "no",
                     f"{r['test_acc']:.3f}", r["epochs"], r["model_updates"],
                     "never" if r["seconds"] is None else f"{r['seconds']:.1f}"]
                    for r in result["rows"]])]
    return "\n".join(lines)


if __name__ == "__main__":
    main(run, markdown)
