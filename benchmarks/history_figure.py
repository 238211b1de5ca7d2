"""The figure of docs/dampers.md: ``plot_history`` of a NoiseScaleDamp fit.

NoiseScaleDamp from 32 on MNIST-1D (MLP 40-256-256-10, SGD with momentum
0.9, ``grads_per_worker=64``, skorch's 20% validation split, 15 epochs) on
2 local workers, at lr 0.1 (the rate section 6 of results.md chose for
this schedule on its validation split). Writes
``docs/img/history_noisescaledamp_mnist1d.png``.

    python benchmarks/history_figure.py
"""
import os

import matplotlib
import torch

from common import local_cluster
from dask_adadamp import DaskClassifier, plot_history
from dask_adadamp.dampers import NoiseScaleDamp
from dask_adadamp.datasets import mnist1d
from dask_adadamp.models import MLP

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "img",
                   "history_noisescaledamp_mnist1d.png")


def main():
    matplotlib.use("Agg")
    X, _, y, _ = mnist1d()
    with local_cluster(2) as client:
        est = DaskClassifier(
            MLP, module__n_features=40, module__hidden=(256, 256),
            criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD, lr=0.1,
            optimizer__momentum=0.9, grads_per_worker=64,
            batch_size=NoiseScaleDamp(initial=32, scale=0.2, beta=0.99), max_epochs=15,
            random_state=0, verbose=0, client=client).fit(X, y)
    fig = plot_history(est)
    fig.savefig(OUT, dpi=80, bbox_inches="tight")
    print(f"wrote {os.path.normpath(OUT)}; {est.history[-1, 'model_updates']} model "
          "updates")


if __name__ == "__main__":
    main()
