"""Train PyTorch models on Dask clusters with adaptive batch sizes.

The estimators are skorch nets; only their training loop runs on Dask::

    from dask_adadamp import DaskClassifier
    est = DaskClassifier(MyNet, lr=0.05, batch_size=256, grads_per_worker=128)
    est.fit(X, y)
"""
import importlib

from . import _config  # noqa: F401 - registers the adadamp.* dask config defaults

# Imported on first use: the scheduler imports dask_adadamp.dashboard for the
# dashboard page, and must not spend seconds of its event loop importing
# torch and skorch for it.
_EXPORTS = {"DaskClassifier": "estimator", "DaskNetMixin": "net",
            "DaskRegressor": "estimator", "ProgressBar": "callbacks",
            "plot_history": "plots", "plot_predicted": "plots"}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])
