"""Command line: ``python -m dask_adadamp demo``.

The demo trains an MLP on scikit-learn's digits with :class:`DaskClassifier`
on an embedded local Dask cluster (nothing to start by hand), printing
skorch's epoch table and the final test accuracy.
"""
import argparse
import sys
import time

import torch


def demo(workers=None, epochs=30, batch_size=64, grads_per_worker=32, seed=0):
    """Fit the demo model and return ``(test_accuracy, fit_seconds)``."""
    from distributed import Client, LocalCluster

    from . import DaskClassifier
    from .datasets import digits
    from .models import MLP

    X_train, X_test, y_train, y_test = digits(random_state=seed)
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1,
                           processes=True, dashboard_address=":0")
    with cluster, Client(cluster) as client:
        page = client.dashboard_link.rsplit("/", 1)[0] + "/adadamp"
        print(f"Dask cluster: {len(client.nthreads())} workers, "
              f"dashboard at {client.dashboard_link}, this fit's page at {page}")
        est = DaskClassifier(
            MLP, module__n_features=X_train.shape[1], module__hidden=128,
            criterion=torch.nn.CrossEntropyLoss,
            optimizer=torch.optim.SGD, lr=0.05, optimizer__momentum=0.9,
            batch_size=batch_size, grads_per_worker=grads_per_worker,
            max_epochs=epochs, random_state=seed,
        )
        start = time.perf_counter()
        est.fit(X_train, y_train)
        seconds = time.perf_counter() - start
        accuracy = est.score(X_test, y_test)
    updates = est.history[-1, "model_updates"]
    print(f"fit: {seconds:.1f} s, {updates} model updates "
          f"({1000 * seconds / updates:.1f} ms per update, validation included)")
    print(f"test accuracy: {accuracy:.4f}")
    return accuracy, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m dask_adadamp")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="train an MLP on digits on a local Dask cluster")
    p.add_argument("--workers", type=int, default=None,
                   help="Dask workers (default: one per core)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--grads-per-worker", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    accuracy, _ = demo(args.workers, args.epochs, args.batch_size,
                       args.grads_per_worker, args.seed)
    return 0 if accuracy >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
