"""Benchmark 3: wall-clock time and model updates to a target accuracy.

DaskClassifier on a 2-worker local cluster, with constant batches and with
every batch-size schedule of ``dask_adadamp.dampers`` that suits a
classifier trained for a fixed budget of epochs, against skorch's
NeuralNetClassifier training the same module in one process (its training
batches shuffled every epoch, as the Dask runs' are), on MNIST-1D
(generated offline by the ``mnist1d`` package). Each run stops at the first
epoch whose accuracy on a validation split carved from the training rows
(``common.mnist1d_split``) reaches the target; ``seconds`` is the
wall-clock time from the start of training to the end of that epoch (its
validation scoring included, the test scoring that is only reported not),
or None if the target was never reached.

Every run's learning rate is chosen by code: each configuration is fitted
at every rate of ``common.LRS``, largest first, and keeps the one that
reaches the target soonest; a rate still short of it after the best time so
far is stopped there (it cannot win). The table gives every rate's time.

Goal (``goals``): the best schedule reaches the target in no more time than
skorch in one process.

Left out: ``GradientDescent`` (one update per epoch: the whole training
set every time; not a contender at a fixed number of epochs).

To add a schedule, add one entry to ``CONFIGS``.

    python benchmarks/time_to_accuracy.py [--quick]
"""
import copy
import sys

import torch
from skorch import NeuralNetClassifier

from common import (B0, LRS, MNIST1D_NET, Scores, choose, local_cluster, main,
                    mnist1d_split, table)
from dask_adadamp import DaskClassifier
from dask_adadamp.dampers import (AdaDamp, GeoDamp, GeoDampLR, NoiseScaleDamp, PadaDamp,
                                  RadaDamp)

TITLE = "3. Time to accuracy"
TARGET = 0.65
MAX_EPOCHS = 60
# --quick, to check the script in about a minute: the first 1000 training
# rows, at most 2 epochs, two rates, a lower target.
QUICK_ROWS, QUICK_EPOCHS, QUICK_TARGET, QUICK_LRS = 1000, 2, 0.25, (0.1, 0.03)
COMMON = dict(MNIST1D_NET, train_split=None, verbose=0)

# name -> (estimator class, extra parameters). One line per configuration;
# the learning rate is chosen. The schedules' own parameters are hand-set:
# PadaDamp grows by 0.1 per update, about as much as GeoDamp's doubling
# over its first 3 epochs (300 updates of 32 on 3200 rows); GeoDampLR
# halves the learning rate where GeoDamp doubles the batch.
CONFIGS = {
    "skorch, 1 process, batch 64": (NeuralNetClassifier, dict(
        batch_size=64, iterator_train__shuffle=True)),
    "dask-adadamp, batch 64": (DaskClassifier, dict(batch_size=64, grads_per_worker=32)),
    "dask-adadamp, batch 512": (DaskClassifier, dict(batch_size=512,
                                                     grads_per_worker=256)),
    "dask-adadamp, GeoDamp 32 x2 every 3 epochs": (DaskClassifier, dict(
        batch_size=GeoDamp(initial=B0, factor=2, delay=3), grads_per_worker=64)),
    "dask-adadamp, GeoDampLR 32, lr /2 every 3 epochs": (DaskClassifier, dict(
        batch_size=GeoDampLR(initial=B0, factor=2, delay=3), grads_per_worker=64)),
    "dask-adadamp, PadaDamp 32 + 0.1 per update": (DaskClassifier, dict(
        batch_size=PadaDamp(initial=B0, rate=0.1), grads_per_worker=64)),
    "dask-adadamp, AdaDamp from 32": (DaskClassifier, dict(
        batch_size=AdaDamp(initial=B0), grads_per_worker=64)),
    "dask-adadamp, RadaDamp from 32": (DaskClassifier, dict(
        batch_size=RadaDamp(initial=B0), grads_per_worker=64)),
    "dask-adadamp, NoiseScaleDamp 0.2 B_noise from 32": (DaskClassifier, dict(
        batch_size=NoiseScaleDamp(initial=B0, scale=0.2, beta=0.99),
        grads_per_worker=64)),
}


def fit_one(name, lr, data, target, max_epochs, client, budget=None):
    """One fit of ``CONFIGS[name]`` at ``lr`` until the validation target
    (or ``budget`` seconds, or ``max_epochs``)."""
    X, X_valid, X_test, y, y_valid, y_test = data
    cls, extra = CONFIGS[name]
    params = {**COMMON, **copy.deepcopy(extra), "lr": lr, "max_epochs": max_epochs}
    if cls is DaskClassifier:
        params.update(client=client, random_state=0)
    else:
        torch.manual_seed(0)
    scores = Scores(X_valid, y_valid, X_test, y_test, target, budget)
    h = cls(callbacks=[("scores", scores)], **params).fit(X, y).history
    reached = bool(h[-1, "valid_acc"] >= target)
    batches = [b for e in h for b in e["batches"] if "train_loss" in b]
    run = {"run": name, "lr": lr, "reached": reached, "valid_acc": h[-1, "valid_acc"],
           "test_acc": h[-1, "test_acc"], "epochs": len(h),
           "model_updates": len(batches),
           # skorch records each batch's size as train_batch_size
           "examples": sum(b.get("batch_size", b.get("train_batch_size", 0))
                           for b in batches),
           "loss_examples": h[-1].get("loss_examples"),
           # wall-clock to the target; None: never reached
           "seconds": h[-1, "elapsed"] if reached else None,
           "seconds_in_all": h[-1, "elapsed"]}
    print(run, flush=True)
    return run


def _score(run):
    """Reached first, then the fewest seconds (or the best accuracy)."""
    return (0, run["seconds"]) if run["reached"] else (1, -run["valid_acc"])


def run(quick=False):
    data = mnist1d_split()
    target, max_epochs, lrs = ((QUICK_TARGET, QUICK_EPOCHS, QUICK_LRS) if quick else
                               (TARGET, MAX_EPOCHS, sorted(LRS, reverse=True)))
    if quick:
        data = (data[0][:QUICK_ROWS], *data[1:3], data[3][:QUICK_ROWS], *data[4:])
    rows = []
    with local_cluster(2) as client:
        for name in CONFIGS:
            def fit(lr, best):
                budget = best["seconds"] if best and best["reached"] else None
                return fit_one(name, lr, data, target, max_epochs, client, budget)
            best, runs = choose(fit, lrs, _score)
            rows.append({**best, "tried": {str(lr): r["seconds"] if r["reached"] else None
                                           for lr, r in runs.items()}})
    return {"dataset": f"MNIST-1D ({len(data[0])} train, {len(data[1])} validation "
                       f"carved from the training rows, {len(data[2])} test)",
            "target": target, "max_epochs": max_epochs, "lrs": list(lrs), "rows": rows}


def goals(result):
    """The best schedule's time to the target against skorch's."""
    name = (f"time to {TARGET} MNIST-1D validation accuracy, best schedule <= 1.0x "
            "skorch in one process")
    rows = [r for r in result["rows"] if r["reached"]]
    skorch = [r for r in rows if r["run"].startswith("skorch")]
    others = [r for r in rows if not r["run"].startswith("skorch")]
    if not skorch:
        return [(name, None, "not measured (skorch did not reach the target)")]
    if not others:
        return [(name, False, "no schedule reached the target (time to accuracy)")]
    base, best = skorch[0], min(others, key=lambda r: r["seconds"])
    ratio = best["seconds"] / base["seconds"]
    return [(name, ratio <= 1.0, f"{ratio:.2f}x = {best['run']} {best['seconds']:.1f} s / "
             f"{base['run']} {base['seconds']:.1f} s (time to accuracy, target "
             f"{result['target']:.2f})")]


def markdown(result):
    def tried(r):
        return ", ".join(f"{lr}: " + ("-" if t is None else f"{t:.1f}")
                         for lr, t in r["tried"].items())

    lines = [f"{result['dataset']}; target validation accuracy {result['target']:.2f} "
             f"(at most {result['max_epochs']} epochs); MLP 40-256-256-10, SGD with "
             f"momentum 0.9; 2 local workers. Each run's lr: the soonest to the target "
             f"of {result['lrs']} (seconds at each; -: not reached, or stopped once "
             "slower than the best). Epochs, updates and accuracies: at the target, or "
             "at the end if never reached. Examples: the gradients' rows; loss "
             "examples: the rows AdaDamp's loss evaluations read besides.", "",
             table(["run", "lr", "seconds at each lr", "reached", "valid acc", "test acc",
                    "epochs", "model updates", "examples", "loss examples",
                    "seconds to target"],
                   [[r["run"], f"{r['lr']:g}", tried(r), "yes" if r["reached"] else "no",
                     f"{r['valid_acc']:.3f}", f"{r['test_acc']:.3f}", r["epochs"],
                     r["model_updates"], r["examples"] or "-",
                     r["loss_examples"] if r["loss_examples"] is not None else "-",
                     "never" if r["seconds"] is None else f"{r['seconds']:.1f}"]
                    for r in result["rows"]])]
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.modules[__name__])
