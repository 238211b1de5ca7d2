"""Train PyTorch models on Dask clusters with adaptive batch sizes.

The estimators are skorch nets; only their training loop runs on Dask::

    from dask_adadamp import DaskClassifier
    est = DaskClassifier(MyNet, lr=0.05, batch_size=256, grads_per_worker=128)
    est.fit(X, y)
"""
from .callbacks import ProgressBar
from .estimator import DaskClassifier, DaskNetMixin, DaskRegressor
from .plots import plot_history

__all__ = ["DaskClassifier", "DaskNetMixin", "DaskRegressor", "ProgressBar",
           "plot_history"]
__version__ = "0.1.0"
