"""Prediction and scoring of dask inputs, where their blocks are.

As dask-ml's ``ParallelPostFit``: the fitted net predicts block by block on
the workers, and a score comes back as one number.
"""
import pickle

import cloudpickle
import dask
import dask.array as da
import numpy as np
from sklearn.base import is_classifier
from toolz import apply

from ._prepare import unknown_rows


def predict_proba(net, X, predict_proba_local):
    """The net's outputs for the dask array ``X``, as a dask array.

    ``predict_proba_local`` is skorch's ``predict_proba`` of the net.
    """
    # Block by block where the blocks are, as dask-ml's ParallelPostFit
    # (whose predict_proba needs classes_: not for a regressor). The
    # output's shape comes from one row of zeros.
    X = X.rechunk({axis: -1 for axis in range(1, X.ndim)})
    out = predict_proba_local(np.zeros((1,) + X.shape[1:], X.dtype))
    # The scheduler unpickles every graph it is sent, and it need not have
    # torch, skorch or dask_adadamp: the net goes as bytes, unpickled on a
    # worker into its bound predict_proba, which each block's task applies
    # (pickle.loads, getattr and toolz's apply: the scheduler has them).
    method = dask.delayed(getattr, pure=True)(
        dask.delayed(pickle.loads, pure=True)(cloudpickle.dumps(net)),
        "predict_proba")
    return da.map_blocks(
        apply, method, X, dtype=out.dtype, token="predict_proba",
        drop_axis=list(range(1, X.ndim)), new_axis=list(range(1, out.ndim)),
        chunks=(X.chunks[0],) + tuple((n,) for n in out.shape[1:]),
        meta=np.empty((0,) + out.shape[1:], out.dtype))


def score(net, X, y, sample_weight=None):
    """Accuracy (classifier) or R^2 (regressor) of dask inputs."""
    # As dask-ml's ParallelPostFit.score: the metric is computed where the
    # predictions are, and only the number comes back.
    from dask_ml import metrics
    y_pred, y = dask.persist(da.asarray(net.predict(X)), da.asarray(y))
    if unknown_rows(y_pred) or unknown_rows(y):
        # In memory now: only the blocks' sizes are read.
        y_pred, y = y_pred.compute_chunk_sizes(), y.compute_chunk_sizes()
    if y.chunks[0] != y_pred.chunks[0]:
        y = y.rechunk({0: y_pred.chunks[0]})
    if is_classifier(net):
        return float(metrics.accuracy_score(y, y_pred, sample_weight=sample_weight))
    if sample_weight is not None:
        raise ValueError("sample_weight is not accepted with dask inputs to "
                         "a regressor's score; pass numpy arrays")
    return r2_score(y, y_pred)


def r2_score(y, y_pred):
    """scikit-learn's ``r2_score`` (outputs averaged uniformly) of dask
    arrays, summed on the cluster (dask-ml's fails on blocks of unknown
    size).

    >>> import dask.array as da
    >>> y = da.from_array([[1.0], [2.0], [3.0]])
    >>> r2_score(y, y), r2_score(y, y * 0 + 2.0)
    (1.0, 0.0)
    """
    y = y.reshape((y.shape[0], -1)) if y.ndim != 2 else y
    y_pred = y_pred.reshape((y_pred.shape[0], -1)) if y_pred.ndim != 2 else y_pred
    residual, total = dask.compute(((y - y_pred) ** 2).sum(axis=0),
                                   ((y - y.mean(axis=0)) ** 2).sum(axis=0))
    # As scikit-learn: a constant target scores 1 if predicted exactly, else 0.
    scores = np.where(total > 0, 1 - residual / np.where(total > 0, total, 1),
                      np.where(residual > 0, 0.0, 1.0))
    return float(scores.mean())
