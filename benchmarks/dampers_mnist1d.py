"""Benchmark 6: growing batches on a real task, MNIST-1D.

Constant-batch SGD against GeoDamp and NoiseScaleDamp starting at the same
batch size, same model and optimizer (SGD with momentum 0.9), each at its
best learning rate of {0.01, 0.03, 0.1}, on a 2-worker local cluster, for
the same number of epochs; the test set is scored after every epoch.
SGD's final test accuracy ``A`` sets the target ``A - 0.01``; the table
gives the epochs and model updates each run needed to first reach it.
The goal: each schedule reaches it with at least 3x fewer model updates
than SGD and no more than 1.2x its epochs.

    python benchmarks/dampers_mnist1d.py [--quick]
"""
import torch
from common import main, table
from distributed import Client, LocalCluster
from time_to_accuracy import StopAtAccuracy

from dask_adadamp import DaskClassifier
from dask_adadamp.dampers import GeoDamp, NoiseScaleDamp
from dask_adadamp.datasets import mnist1d
from dask_adadamp.models import MLP

EPOCHS = 40
B0 = 32
COMMON = dict(module=MLP, module__n_features=40, module__hidden=(256, 256),
              criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
              optimizer__momentum=0.9, grads_per_worker=64, train_split=None,
              random_state=0, verbose=0)
# name -> parameters; the learning rates are each run's best of
# {0.01, 0.03, 0.1} (SGD at 0.1 diverges after epoch 9).
RUNS = {
    f"SGD, batch {B0}": dict(batch_size=B0, lr=0.03),
    "GeoDamp, x2 every 3 epochs": dict(
        batch_size=GeoDamp(initial=B0, factor=2, delay=3), lr=0.1),
    "NoiseScaleDamp, 0.2 B_noise": dict(
        batch_size=NoiseScaleDamp(initial=B0, scale=0.2, beta=0.99), lr=0.1),
}


def fit_runs(runs, epochs, data):
    """Fit every configuration of ``runs`` (name -> parameters beside
    ``COMMON``) on a 2-worker local cluster, scoring the test set after every
    epoch (``test_acc`` and ``elapsed`` in the history); the fitted
    estimators by name."""
    X, X_test, y, y_test = data
    fitted = {}
    with LocalCluster(n_workers=2, threads_per_worker=1,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        for name, params in runs.items():
            score = StopAtAccuracy(X_test, y_test, target=None)
            fitted[name] = est = DaskClassifier(
                **COMMON, **params, max_epochs=epochs, client=client,
                callbacks=[("score", score)]).fit(X, y)
            print(name, [round(a, 3) for a in est.history[:, "test_acc"]], flush=True)
    return fitted


def run(quick=False):
    epochs = 8 if quick else EPOCHS
    fitted = fit_runs(RUNS, epochs, mnist1d())
    curves = {name: [{"epoch": row["epoch"], "test_acc": row["test_acc"],
                      "model_updates": row["model_updates"],
                      "batch_size": row["batch_size"], "seconds": row["elapsed"]}
                     for row in est.history]
              for name, est in fitted.items()}
    sgd = curves[next(iter(RUNS))]
    target = sgd[-1]["test_acc"] - 0.01
    rows = []
    for name, curve in curves.items():
        hit = next((r for r in curve if r["test_acc"] >= target), None)
        rows.append({"run": name, "final_acc": curve[-1]["test_acc"],
                     "epochs_to_target": hit and hit["epoch"],
                     "updates_to_target": hit and hit["model_updates"],
                     "batch_sizes": [r["batch_size"] for r in curve],
                     "total_updates": curve[-1]["model_updates"],
                     "seconds": curve[-1]["seconds"]})
    reference = rows[0]
    for r in rows:
        if r["epochs_to_target"] and reference["epochs_to_target"]:
            r["fewer_updates"] = reference["updates_to_target"] / r["updates_to_target"]
            r["epochs_ratio"] = r["epochs_to_target"] / reference["epochs_to_target"]
    return {"epochs": epochs, "target": target, "rows": rows, "curves": curves}


def markdown(result):
    lines = [f"MNIST-1D (4000 train, 1000 test), MLP 40-256-256-10, SGD momentum 0.9, "
             f"{result['epochs']} epochs, 2 local workers. Target: SGD's final test "
             f"accuracy - 0.01 = {result['target']:.3f}.", "",
             table(["run", "final test acc", "epochs to target", "updates to target",
                    "x fewer updates than SGD", "epochs / SGD's", "updates in all",
                    "seconds in all"],
                   [[r["run"], f"{r['final_acc']:.3f}", r["epochs_to_target"] or "never",
                     r["updates_to_target"] or "-",
                     f"{r['fewer_updates']:.2f}" if "fewer_updates" in r else "-",
                     f"{r['epochs_ratio']:.2f}" if "epochs_ratio" in r else "-",
                     r["total_updates"], f"{r['seconds']:.0f}"]
                    for r in result["rows"]]),
             "", "Batch size per epoch:", ""]
    lines += [f"- {r['run']}: {r['batch_sizes']}" for r in result["rows"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main(run, markdown)
