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

The runs themselves (``common.MNIST1D_RUNS``, made by
``common.mnist1d_runs``) are defined in common.py, because section 7
(simulate_paper.py) simulates them, and makes them when run on its own.

Goal (``goals``): each schedule reaches the target with at least 3x fewer
model updates than SGD and no more than 1.2x its epochs.

    python benchmarks/dampers_mnist1d.py [--quick]
"""
import sys

from common import MNIST1D_GEO, MNIST1D_SGD, main, mnist1d_runs, table

TITLE = "6. Growing batches on MNIST-1D"
SCHEDULES = (MNIST1D_GEO, "NoiseScaleDamp, 0.2 B_noise")


def run(quick=False):
    source = mnist1d_runs(quick)
    chosen = source["runs"]
    target = chosen[MNIST1D_SGD]["curve"][-1]["valid_acc"] - 0.01
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
    # What simulate_paper.py reads of each run (READS there).
    runs = {name: {k: r[k] for k in ("lr", "curve", "update_batch_sizes", "seconds")}
            for name, r in chosen.items()}
    return {**{k: source[k] for k in ("epochs", "lrs", "n_train", "n_valid", "n_test")},
            "target": target, "rows": rows, "runs": runs}


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
    main(sys.modules[__name__])
