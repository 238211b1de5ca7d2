"""The figure of docs/dampers.md: ``plot_history`` of a NoiseScaleDamp fit.

NoiseScaleDamp from 32 on MNIST-1D (MLP 40-256-256-10, SGD with momentum
0.9, ``grads_per_worker=64``, skorch's 20% validation split, 15 epochs) on
2 local workers, at lr 0.1 (the rate section 6 of results.md chose for
this schedule on its validation split). Writes
``docs/img/history_noisescaledamp_mnist1d.png``; ``--quick`` fits 2 epochs
and writes its figure to the temporary directory instead, leaving the
docs' figure as it is.

A tool, not a section of run_all.py.

    python benchmarks/history_figure.py [--quick]
"""
import os
import sys
import tempfile

import matplotlib

from common import B0, MNIST1D_NET, local_cluster, main
from dask_adadamp import DaskClassifier, plot_history
from dask_adadamp.dampers import NoiseScaleDamp
from dask_adadamp.datasets import mnist1d

TITLE = "The figure of docs/dampers.md"
NAME = "history_noisescaledamp_mnist1d.png"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "img", NAME)


def run(quick=False):
    matplotlib.use("Agg")
    out = os.path.join(tempfile.gettempdir(), NAME) if quick else OUT
    X, _, y, _ = mnist1d()
    with local_cluster(2) as client:
        est = DaskClassifier(
            **MNIST1D_NET, lr=0.1, grads_per_worker=64,
            batch_size=NoiseScaleDamp(initial=B0, scale=0.2, beta=0.99),
            max_epochs=2 if quick else 15, random_state=0, verbose=0,
            client=client).fit(X, y)
    plot_history(est).savefig(out, dpi=80, bbox_inches="tight")
    return {"figure": os.path.normpath(out),
            "model_updates": int(est.history[-1, "model_updates"])}


def markdown(result):
    return f"Wrote {result['figure']}; {result['model_updates']} model updates."


if __name__ == "__main__":
    main(sys.modules[__name__])
