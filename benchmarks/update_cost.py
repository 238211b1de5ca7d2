"""Seconds per model update: DaskClassifier on a local cluster against a
plain single-process PyTorch loop on the same model, batch and data.

    python benchmarks/update_cost.py [--workers 2] [--batch 512 4096]

Prints a Markdown table of median seconds per update and their ratio.
The Dask update time is measured between consecutive updates inside one
fit (skorch's on_batch_begin), so it includes everything an update costs:
sending the weights, the tasks, the reduction and the optimizer step.
"""
import argparse
import time

import numpy as np
import torch
from distributed import Client, LocalCluster
from skorch.callbacks import Callback

from dask_adadamp import DaskClassifier
from dask_adadamp.models import MLP

N_CLASSES = 10
N_FEATURES, HIDDEN = 784, (256, 256)  # about 270k parameters; see --demo-model


class UpdateClock(Callback):
    """Wall-clock time between the starts of consecutive updates."""

    def initialize(self):
        self.starts = []
        return self

    def on_batch_begin(self, net, training=False, **kwargs):
        if training:
            self.starts.append(time.perf_counter())

    def seconds(self):
        return np.diff(self.starts)


def data(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES)).astype("float32")
    y = rng.integers(0, N_CLASSES, size=n).astype("int64")
    return X, y


def plain_torch(batch, updates):
    torch.manual_seed(0)
    module = MLP(N_FEATURES, N_CLASSES, HIDDEN)
    opt = torch.optim.SGD(module.parameters(), lr=0.01)
    X, y = data(batch * updates)
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    times = []
    for k in range(updates):
        start = time.perf_counter()
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            module(X[k * batch:(k + 1) * batch]), y[k * batch:(k + 1) * batch])
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return np.array(times[2:])


def dask_updates(client, batch, updates, n_workers):
    clock = UpdateClock()
    est = DaskClassifier(
        MLP, module__n_features=N_FEATURES, module__n_classes=N_CLASSES,
        module__hidden=HIDDEN, criterion=torch.nn.CrossEntropyLoss, lr=0.01,
        batch_size=batch, grads_per_worker=batch // n_workers, max_epochs=1,
        train_split=None, random_state=0, verbose=0, client=client,
        callbacks=[("clock", clock)])
    est.fit(*data(batch * updates))
    return clock.seconds()[2:]


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--updates", type=int, default=40)
    parser.add_argument("--demo-model", action="store_true",
                        help="the demo's MLP (64 features, 128 hidden) instead")
    args = parser.parse_args(argv)
    if args.demo_model:
        global N_FEATURES, HIDDEN
        N_FEATURES, HIDDEN = 64, 128
    n_params = sum(p.numel() for p in MLP(N_FEATURES, N_CLASSES, HIDDEN).parameters())
    print(f"MLP with {n_params} parameters, {args.workers} workers x 1 thread\n")
    print("| batch | plain torch (ms) | dask-adadamp (ms) | ratio |")
    print("|---|---|---|---|")
    with LocalCluster(n_workers=args.workers, threads_per_worker=1,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        for batch in args.batch:
            plain = np.median(plain_torch(batch, args.updates))
            ours = np.median(dask_updates(client, batch, args.updates, args.workers))
            print(f"| {batch} | {1e3 * plain:.1f} | {1e3 * ours:.1f} | "
                  f"{ours / plain:.2f} |")


if __name__ == "__main__":
    main()
