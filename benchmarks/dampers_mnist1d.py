"""Benchmark 6: growing batches on a real task, MNIST-1D.

Constant-batch SGD against GeoDamp and NoiseScaleDamp starting at the same
batch size, with the same model and optimizer (SGD with momentum 0.9), on a
2-worker local cluster, for the same number of epochs. Beside them, the
baselines a reviewer asks for: SGD with a step-decaying learning rate
(halved every 3 epochs, where GeoDamp doubles the batch), SGD at GeoDamp's
learning rate (so that "fewer updates" is not a larger rate in disguise),
and a constant batch of 1024.

Every run's learning rate is chosen by code: each run is fitted at every
rate of ``common.LRS`` and keeps the one with the best final accuracy on a
validation split carved from the training rows (``common.mnist1d_split``);
"SGD at GeoDamp's lr" takes GeoDamp's choice. The target is SGD's final
validation accuracy - 0.01, and the table gives the epochs and model
updates each run needed to first reach it on the validation rows. Test
accuracy is reported, never used to choose.

Goal (``goals``): each schedule reaches the target with at least 3x fewer
model updates than SGD and no more than 1.2x its epochs.

    python benchmarks/dampers_mnist1d.py [--quick]
"""
import copy

import torch
from skorch.callbacks import LRScheduler

from common import LRS, Scores, choose, local_cluster, main, mnist1d_split, table
from dask_adadamp import DaskClassifier
from dask_adadamp.dampers import GeoDamp, NoiseScaleDamp
from dask_adadamp.models import MLP

EPOCHS = 20
QUICK_EPOCHS, QUICK_LRS = 3, (0.03, 0.1)
B0 = 32
COMMON = dict(module=MLP, module__n_features=40, module__hidden=(256, 256),
              criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
              optimizer__momentum=0.9, grads_per_worker=64, train_split=None,
              random_state=0, verbose=0)
SGD = f"SGD, batch {B0}"
GEO = "GeoDamp, x2 every 3 epochs"
SCHEDULES = (GEO, "NoiseScaleDamp, 0.2 B_noise")
# name -> parameters beside COMMON (the learning rate is chosen).
RUNS = {
    SGD: dict(batch_size=B0),
    f"SGD, batch {B0}, lr /2 every 3 epochs": dict(
        batch_size=B0, callbacks=[("step", LRScheduler(
            torch.optim.lr_scheduler.StepLR, step_size=3, gamma=0.5))]),
    GEO: dict(batch_size=GeoDamp(initial=B0, factor=2, delay=3)),
    f"SGD, batch {B0}, at GeoDamp's lr": dict(batch_size=B0),
    "NoiseScaleDamp, 0.2 B_noise": dict(
        batch_size=NoiseScaleDamp(initial=B0, scale=0.2, beta=0.99)),
    "SGD, batch 1024": dict(batch_size=1024),
}
# Runs that take another run's chosen rate instead of choosing their own.
SAME_LR = {f"SGD, batch {B0}, at GeoDamp's lr": GEO}


def fit_one(name, lr, epochs, data, client):
    """One fit of ``RUNS[name]`` at ``lr``: its per-epoch curve, its
    per-update batch sizes and its seconds."""
    X, X_valid, X_test, y, y_valid, y_test = data
    params = copy.deepcopy(RUNS[name])  # fresh callbacks and schedule
    scores = Scores(X_valid, y_valid, X_test, y_test)
    callbacks = [("scores", scores)] + params.pop("callbacks", [])
    est = DaskClassifier(**COMMON, **params, lr=lr, max_epochs=epochs, client=client,
                         callbacks=callbacks).fit(X, y)
    curve = [{"epoch": row["epoch"], "valid_acc": row["valid_acc"],
              "test_acc": row["test_acc"], "model_updates": row["model_updates"],
              "n_examples": row["n_examples"], "batch_size": row["batch_size"],
              "seconds": row["elapsed"]} for row in est.history]
    print(f"{name}, lr {lr}: valid", [round(r["valid_acc"], 3) for r in curve], flush=True)
    return {"run": name, "lr": lr, "curve": curve,
            "update_batch_sizes": [b["batch_size"] for e in est.history
                                   for b in e["batches"] if "batch_size" in b],
            "seconds": curve[-1]["seconds"]}


def run(quick=False):
    epochs, lrs = (QUICK_EPOCHS, QUICK_LRS) if quick else (EPOCHS, LRS)
    data = mnist1d_split()
    chosen = {}
    with local_cluster(2) as client:
        for name in RUNS:
            if name in SAME_LR:
                lr = chosen[SAME_LR[name]]["lr"]
                chosen[name] = {**fit_one(name, lr, epochs, data, client),
                                "tried": {}, "lr_from": SAME_LR[name]}
                continue
            best, runs = choose(lambda lr, best: fit_one(name, lr, epochs, data, client),
                                lrs, score=lambda r: -r["curve"][-1]["valid_acc"])
            chosen[name] = {**best, "tried": {str(lr): r["curve"][-1]["valid_acc"]
                                              for lr, r in runs.items()}}
    target = chosen[SGD]["curve"][-1]["valid_acc"] - 0.01
    rows = []
    for name, r in chosen.items():
        curve = r["curve"]
        hit = next((c for c in curve if c["valid_acc"] >= target), None)
        rows.append({"run": name, "lr": r["lr"], "tried": r["tried"],
                     "lr_from": r.get("lr_from"),
                     "final_valid_acc": curve[-1]["valid_acc"],
                     "final_acc": curve[-1]["test_acc"],
                     "epochs_to_target": hit and hit["epoch"],
                     "updates_to_target": hit and hit["model_updates"],
                     "batch_sizes": [c["batch_size"] for c in curve],
                     "total_updates": curve[-1]["model_updates"],
                     "examples": curve[-1]["n_examples"],
                     "seconds": r["seconds"]})
    reference = rows[0]
    for r in rows:
        if r["epochs_to_target"] and reference["epochs_to_target"]:
            r["fewer_updates"] = reference["updates_to_target"] / r["updates_to_target"]
            r["epochs_ratio"] = r["epochs_to_target"] / reference["epochs_to_target"]
    return {"epochs": epochs, "lrs": list(lrs), "n_train": len(data[0]),
            "n_valid": len(data[1]), "n_test": len(data[2]), "target": target,
            "rows": rows, "runs": {name: {k: r[k] for k in ("lr", "curve",
                                                              "update_batch_sizes",
                                                              "seconds")}
                                   for name, r in chosen.items()}}


def goals(result):
    """Each schedule against SGD: ``(goal, met, measured)``."""
    rows = {r["run"]: r for r in result["rows"]}
    out = []
    for name in SCHEDULES:
        r = rows[name]
        fewer, ratio = r.get("fewer_updates", 0), r.get("epochs_ratio", float("inf"))
        out.append((f"{name.split(',')[0]} on MNIST-1D: SGD's validation accuracy - 0.01 "
                    "with >= 3x fewer model updates, <= 1.2x the epochs",
                    fewer >= 3 and ratio <= 1.2,
                    f"{fewer:.2f}x fewer updates, {ratio:.2f}x the epochs "
                    f"(growing batches on MNIST-1D)"))
    return out


def markdown(result):
    def tried(r):
        if r["lr_from"]:
            return f"{r['lr_from']}'s"
        return ", ".join(f"{lr}: {acc:.3f}" for lr, acc in r["tried"].items())

    lines = [f"MNIST-1D ({result['n_train']} train, {result['n_valid']} validation carved "
             f"from the 4000 training rows, {result['n_test']} test), MLP 40-256-256-10, "
             f"SGD momentum 0.9, {result['epochs']} epochs, 2 local workers. Each run's "
             f"lr is its best final validation accuracy of {result['lrs']}. Target: "
             f"SGD's final validation accuracy - 0.01 = {result['target']:.3f}; epochs "
             "and updates to target on the validation rows; test accuracy only "
             "reported.", "",
             table(["run", "lr", "final valid acc at each lr tried", "final valid acc",
                    "final test acc", "epochs to target", "updates to target",
                    "x fewer updates than SGD", "epochs / SGD's", "updates in all",
                    "examples in all", "seconds in all"],
                   [[r["run"], f"{r['lr']:g}", tried(r), f"{r['final_valid_acc']:.3f}",
                     f"{r['final_acc']:.3f}", r["epochs_to_target"] or "never",
                     r["updates_to_target"] or "-",
                     f"{r['fewer_updates']:.2f}" if "fewer_updates" in r else "-",
                     f"{r['epochs_ratio']:.2f}" if "epochs_ratio" in r else "-",
                     r["total_updates"], r["examples"], f"{r['seconds']:.0f}"]
                    for r in result["rows"]]),
             "", "Batch size per epoch:", ""]
    lines += [f"- {r['run']}: {r['batch_sizes']}" for r in result["rows"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main(run, markdown)
