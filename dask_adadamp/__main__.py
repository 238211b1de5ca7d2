"""Command line: ``python -m dask_adadamp demo``.

The demo shows what the library is for: batches that grow as the model
improves while the Dask cluster grows with them. On an embedded local
cluster (nothing to start by hand) it trains an MLP twice with the same
seed and learning rate: at a constant batch (plain SGD), then with an
adaptive schedule whose batch grows, with ``max_workers`` so that the
cluster follows the batch. It prints skorch's epoch table of each (batch
size, learning rate, workers, model updates) and then a comparison: model
updates, examples (gradients and the schedule's loss evaluations),
wall-clock on a warm cluster, test accuracy and the most workers used, and
the adaptive fit's as multiples of the constant batch's. It exits with 1,
saying why, when the adaptive fit's test accuracy is below 0.9.

    python -m dask_adadamp demo --help
"""
import argparse
import logging
import sys
import time

import torch

SCHEDULES = {
    # name: (class name in dask_adadamp.dampers, its parameters but `initial`)
    "geodamp": ("GeoDamp", {"factor": 2, "delay": 4}),
    "padadamp": ("PadaDamp", {"rate": 2.0}),
    "adadamp": ("AdaDamp", {"approx": 0.25}),
}


def load(data, seed):
    """``X_train, X_test, y_train, y_test`` of a bundled or generated set."""
    from . import datasets
    if data == "digits":
        return datasets.digits(random_state=seed)
    return datasets.mnist1d(random_state=seed)


def demo(schedule="geodamp", data="digits", epochs=20, initial=32, max_workers=4,
         grads_per_worker=64, lr=0.05, seed=0, verbose=1):
    """Train at a constant batch, then with ``schedule``; print both.

    Both fits are timed on a warm cluster: its first worker has started and
    trained (an untimed one-epoch fit on a few rows) before either fit
    starts; the workers the adaptive fit asks for start during it.

    Returns
    -------
    dict
        For ``"constant"`` and ``schedule``: ``updates`` (model updates),
        ``gradient_examples`` (rows whose gradients were computed),
        ``loss_examples`` (rows whose loss the schedule evaluated: AdaDamp's,
        RadaDamp's), ``examples`` (both), ``seconds`` (the fit's
        wall-clock), ``accuracy`` (on the test split) and ``max_workers``
        (the most workers an epoch used).
    """
    from distributed import Client, LocalCluster

    from . import DaskClassifier, dampers
    from .models import MLP

    X_train, X_test, y_train, y_test = load(data, seed)
    cls_name, kwargs = SCHEDULES[schedule]
    runs = {"constant": initial,
            schedule: getattr(dampers, cls_name)(initial=initial, **kwargs)}

    def classifier(batch_size, **params):
        return DaskClassifier(
            MLP, module__n_features=X_train.shape[1], module__hidden=128,
            criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
            lr=lr, optimizer__momentum=0.9, batch_size=batch_size,
            grads_per_worker=grads_per_worker, min_workers=1, random_state=seed,
            client=client, **params)

    # One worker to start with: the adaptive fit asks for more as its batch
    # grows (min_workers/max_workers), and gives them back at the end.
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                           dashboard_address=":0",
                           # the nannies' warnings as workers leave are noise here
                           silence_logs=logging.ERROR)
    results = {}
    with cluster, Client(cluster) as client:
        page = client.dashboard_link.rsplit("/", 1)[0] + "/adadamp"
        print(f"Dask dashboard: {client.dashboard_link}\n"
              f"These fits, live: {page}\n")
        # Untimed: the worker's start-up (its process, imports, first
        # calls) and this process's first fit are charged to neither fit.
        classifier(initial, max_workers=1, max_epochs=1, train_split=None,
                   verbose=0).fit(X_train[:4 * initial], y_train[:4 * initial])
        for name, batch_size in runs.items():
            print(f"== {name}: batch_size={batch_size!r}, lr={lr}, "
                  f"grads_per_worker={grads_per_worker}, max_workers={max_workers}")
            est = classifier(batch_size, max_workers=max_workers, max_epochs=epochs,
                             verbose=verbose)
            start = time.perf_counter()
            est.fit(X_train, y_train)
            seconds = time.perf_counter() - start
            last = est.history[-1]
            gradients, losses = int(last["n_examples"]), int(last.get("loss_examples", 0))
            results[name] = {
                "updates": int(last["model_updates"]), "gradient_examples": gradients,
                "loss_examples": losses, "examples": gradients + losses,
                "seconds": seconds, "accuracy": float(est.score(X_test, y_test)),
                "max_workers": max(est.history[:, "n_workers"])}
            print()
    _compare(results)
    return results


def _compare(results):
    rows = [("", *results)]
    rows += [(label, *(fmt(r[key]) for r in results.values())) for label, key, fmt in [
        ("model updates", "updates", str),
        ("gradient examples", "gradient_examples", str),
        ("loss-evaluation examples", "loss_examples", str),
        ("examples in all", "examples", str),
        ("wall-clock (s)", "seconds", "{:.1f}".format),
        ("test accuracy", "accuracy", "{:.3f}".format),
        ("most workers used", "max_workers", str)]]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(cell).rjust(w) for cell, w in zip(row, widths)))
    print(f"\n{_ratios(results)}\nBoth fits ran on a warm cluster of one worker; "
          "the workers the adaptive fit asked for started during it, and all "
          "share this machine's cores (see docs/performance.md).")


def _ratios(results):
    """The adaptive fit's measures as multiples of the constant batch's, e.g.
    "geodamp against constant: 0.25x the model updates, 1.00x the examples,
    1.25x the wall-clock time." (tests/test_demo.py: pytest collects no
    doctest from a __main__.py)."""
    (_, constant), (name, adaptive) = results.items()
    parts = [f"{adaptive[key] / constant[key]:.2f}x the {what}" for key, what in [
        ("updates", "model updates"), ("examples", "examples"),
        ("seconds", "wall-clock time")]]
    return f"{name} against constant: {', '.join(parts)}."


def _parser():
    parser = argparse.ArgumentParser(prog="python -m dask_adadamp")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "demo", help="growing batches on a local Dask cluster that grows with them",
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--schedule", choices=sorted(SCHEDULES), default="geodamp",
                   help="the adaptive batch-size schedule (dask_adadamp.dampers)")
    p.add_argument("--data", choices=["digits", "mnist1d"], default="digits",
                   help="scikit-learn's bundled digits, or MNIST-1D generated "
                        "offline (needs the demo extra)")
    p.add_argument("--epochs", type=int, default=20,
                   help="passes over the training split, for each fit")
    p.add_argument("--initial", type=int, default=32,
                   help="the constant batch, and the schedule's first batch")
    p.add_argument("--max-workers", type=int, default=4,
                   help="most Dask workers the cluster may grow to")
    p.add_argument("--grads-per-worker", type=int, default=64,
                   help="gradients each worker computes per update")
    p.add_argument("--lr", type=float, default=0.05,
                   help="the learning rate of SGD (momentum 0.9), the same for both fits")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the data split, the weights and the batches' rows")
    return parser


#: The adaptive fit's test accuracy below which the demo exits with 1.
PASS_ACCURACY = 0.9


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    for name in ("epochs", "initial", "max_workers", "grads_per_worker"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}={getattr(args, name)} is not "
                         "accepted; it must be a positive integer")
    results = demo(args.schedule, args.data, args.epochs, args.initial,
                   args.max_workers, args.grads_per_worker, args.lr, args.seed)
    # A failure code when the adaptive fit did not learn: the demo doubles
    # as a smoke test of a fresh install.
    accuracy = results[args.schedule]["accuracy"]
    if accuracy < PASS_ACCURACY:
        print(f"python -m dask_adadamp demo: exit status 1: the {args.schedule} fit "
              f"reached a test accuracy of {accuracy:.3f}, below the "
              f"{PASS_ACCURACY} that a working install reaches with the defaults "
              "(--epochs, --lr and --initial change how far it gets)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
