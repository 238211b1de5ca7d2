"""What a fit's inputs become on the cluster, checked the way skorch would.

- The training arrays (:func:`as_arrays`, :func:`check_arrays`): numpy
  arrays, tensors, frames, scipy.sparse matrices (kept sparse, densified
  per chunk on the workers), a dict of arrays (skorch passes its items to
  the module's ``forward`` as keyword arguments) or a Dataset yielding
  ``(X, y)``.
- Fit parameters (:func:`split_fit_params`): those with one value per
  example are placed with the data and sliced with every chunk
  (:class:`~dask_adadamp._netcopy.Rows`); the others reach every chunk's
  ``infer`` as they are.
- Dask DataFrames and Series (:func:`dask_frame_as_array`): lazy dask
  arrays, converted partition by partition where the partitions are.
- ``iterator_train`` settings (:func:`train_batch_size`): the training
  iterator is the fit's own sampler, so ``iterator_train__batch_size``
  sets the batch size and every other setting is refused by name.
- ``EpochScoring``/``BatchScoring(on_train=True)``
  (:func:`train_scoring_uncached`, :func:`batch_rows`): the workers return
  sums, not predictions, so such scorers predict the training data on the
  client (after the epoch, or each update's rows after its step).
"""
import copy
import numbers
import sys
import warnings
from collections.abc import Mapping

import dask.array as da
import numpy as np
import scipy.sparse
import torch
from skorch.callbacks import BatchScoring, EpochScoring
from skorch.dataset import Dataset, unpack_data
from skorch.utils import to_numpy
from torch.utils.data import DataLoader, Subset

from ._netcopy import Rows
from .exceptions import ScoringCacheWarning


def train_batch_size(net):
    """The training batch size ``iterator_train__batch_size`` sets, or
    None; raise ValueError for the ``iterator_train`` settings a fit on
    the cluster cannot honour.

    >>> from types import SimpleNamespace
    >>> from torch.utils.data import DataLoader
    >>> net = SimpleNamespace(iterator_train=DataLoader, get_params_for=lambda p: {
    ...     "batch_size": 10, "shuffle": True})
    >>> train_batch_size(net)
    10
    >>> net.get_params_for = lambda p: {"num_workers": 2}
    >>> train_batch_size(net)
    Traceback (most recent call last):
    ...
    ValueError: iterator_train__num_workers=2 is not accepted: the workers read their rows straight from the fit's shards, without a DataLoader. Accepted: iterator_train__batch_size (or batch_size) and iterator_train__shuffle=True (updates always draw seeded random rows).
    """
    accepted = ("Accepted: iterator_train__batch_size (or batch_size) and "
                "iterator_train__shuffle=True (updates always draw seeded "
                "random rows).")
    if net.iterator_train is not DataLoader:
        raise ValueError(
            f"iterator_train={net.iterator_train!r} is not accepted: the "
            "updates' rows are drawn on the cluster, not by an iterator. "
            + accepted)
    kwargs = net.get_params_for("iterator_train")
    for key, value in kwargs.items():
        if key == "batch_size" or (key == "shuffle" and value is True):
            continue
        raise ValueError(
            f"iterator_train__{key}={value!r} is not accepted: the workers "
            "read their rows straight from the fit's shards, without a "
            "DataLoader. " + accepted)
    size = kwargs.get("batch_size")
    if size is not None and not (size == -1 or (
            isinstance(size, numbers.Integral) and not isinstance(size, bool)
            and size > 0)):
        raise ValueError(f"iterator_train__batch_size={size!r} is not accepted; "
                         "pass a positive integer, or -1 for the whole "
                         "training set")
    return size


def split_fit_params(fit_params, n_samples):
    """``(per_example, constant)``: fit parameters with one value per
    example (an array, tensor or frame whose first dimension is
    ``n_samples``), and the others.

    >>> per, const = split_fit_params({"w": np.ones(4), "k": 3}, 4)
    >>> sorted(per), const
    (['w'], {'k': 3})
    """
    per_example, constant = {}, {}
    for key, value in fit_params.items():
        shape = getattr(value, "shape", None)
        if shape and shape[0] == n_samples:
            per_example[key] = (value if isinstance(value, torch.Tensor)
                                else np.asarray(value))
        else:
            constant[key] = value
    return per_example, constant


def n_rows(X):
    """Examples in X: an array, sparse matrix or dict of arrays."""
    if isinstance(X, Mapping):
        return n_rows(next(iter(X.values())))
    return X.shape[0]


def train_rows(X_train, per_example, indices):
    """X for the cluster: X itself, or :class:`~dask_adadamp._netcopy.Rows`
    holding a sparse X or a dict X, and/or the training rows (``indices`` of
    the data the fit was given) of the per-example fit parameters."""
    if not (per_example or scipy.sparse.issparse(X_train)
            or isinstance(X_train, Mapping)):
        return X_train
    if scipy.sparse.issparse(X_train):
        X_train = X_train.tocsr()
    return Rows(X_train, {k: v[indices] for k, v in per_example.items()})


def train_indices(dataset, dataset_train, n_samples):
    """Which rows of the data the fit was given the training split holds,
    or None where the split made a dataset of its own."""
    if dataset_train is dataset or (
            isinstance(dataset_train, Dataset) and isinstance(dataset, Dataset)
            and dataset_train.X is dataset.X):
        return np.arange(n_samples)
    if isinstance(dataset_train, Subset) and dataset_train.dataset is dataset:
        return np.asarray(dataset_train.indices)
    return None


def as_arrays(X, y):
    """Arrays from what skorch accepts: arrays, tensors, frames, sparse
    matrices, or a Dataset (or Subset of one) yielding ``(X, y)``."""
    if isinstance(X, Subset) and isinstance(X.dataset, Dataset) and X.dataset.y is not None:
        idx = np.asarray(X.indices)
        return _rows_of(X.dataset.X, idx), np.asarray(X.dataset.y)[idx]
    if isinstance(X, Dataset) and X.y is not None:
        return _as_array(X.X), np.asarray(X.y)
    if isinstance(X, torch.utils.data.Dataset):
        if len(X) == 0:
            raise ValueError("the Dataset X holds no examples")
        # skorch's own check and message for a Dataset yielding one item.
        Xb, yb = unpack_data(next(iter(DataLoader(X, batch_size=len(X),
                                                  shuffle=False))))
        return _as_array(Xb), to_numpy(yb)
    y = to_numpy(y) if isinstance(y, torch.Tensor) else np.asarray(y)
    return _as_array(X), y


def _as_array(X):
    if isinstance(X, Mapping):
        return {k: _as_array(v) for k, v in X.items()}
    if scipy.sparse.issparse(X):
        return X.tocsr()
    return to_numpy(X) if isinstance(X, torch.Tensor) else np.asarray(X)


def _rows_of(X, idx):
    X = _as_array(X)
    return {k: v[idx] for k, v in X.items()} if isinstance(X, dict) else X[idx]


def as_dtype(X, dtype):
    """X with every array of numbers (bool, int, float) that is not of
    ``dtype`` converted to it: X itself (a numpy, dask or scipy.sparse
    array, a tensor), each value of a dict X, or the X of
    :class:`~dask_adadamp._netcopy.Rows` (its per-example fit parameters
    stay as they are). X itself where nothing changes.

    >>> as_dtype(np.zeros(2), np.dtype("float32")).dtype
    dtype('float32')
    >>> as_dtype({"a": np.zeros(2, "int64"), "b": np.zeros(2, "float32")},
    ...          np.dtype("float32"))["a"].dtype
    dtype('float32')
    """
    if isinstance(X, Rows):
        converted = as_dtype(X.X, dtype)
        return X if converted is X.X else Rows(converted, X.fit_params)
    if isinstance(X, Mapping):
        converted = {k: as_dtype(v, dtype) for k, v in X.items()}
        return X if all(converted[k] is X[k] for k in X) else converted
    if isinstance(X, torch.Tensor):
        wanted = getattr(torch, dtype.name)
        if X.dtype == wanted or X.is_complex():
            return X
        return X.to(wanted)
    kind = getattr(getattr(X, "dtype", None), "kind", None)
    if kind is None or kind not in "biuf" or X.dtype == dtype:
        return X
    return X.astype(dtype)


def check_arrays(X, y):
    """Raise ValueError for training arrays the workers cannot use, naming
    what is wrong and what is accepted."""
    if getattr(y, "dtype", None) is not None and y.dtype.kind in "fc" \
            and not np.isfinite(y).all():
        bad = np.argwhere(~np.isfinite(y))[0]
        raise ValueError(
            f"y contains NaN or infinite values (first at index "
            f"{tuple(int(i) for i in bad)}); only finite numbers are accepted")
    if isinstance(X, dict):
        if not X:
            raise ValueError("X is an empty dict; pass arrays as its values")
        for value in X.values():
            check_arrays(value, y)
        return
    if isinstance(X, np.ndarray) and X.dtype == object and X.ndim == 0:
        raise ValueError(
            f"X of type {type(X.item()).__name__} is not accepted; pass a "
            "numpy array, torch tensor, DataFrame, scipy.sparse matrix or a "
            "Dataset yielding (X, y)")
    if X.ndim == 0 or X.shape[0] == 0:
        raise ValueError(f"X of shape {X.shape} holds no examples")
    if y.ndim == 0 or len(y) != X.shape[0]:
        raise ValueError(
            f"X has {X.shape[0]} rows but y has {len(y) if y.ndim else 'no'} rows; "
            "they must have the same length")
    values = X.data if scipy.sparse.issparse(X) else X
    if X.dtype.kind in "fc" and not np.isfinite(values).all():
        where = ("" if scipy.sparse.issparse(X) else " (first at index "
                 f"{tuple(int(i) for i in np.argwhere(~np.isfinite(X))[0])})")
        raise ValueError(f"X contains NaN or infinite values{where}; only "
                         "finite numbers are accepted")
    if X.dtype.kind not in "biufc":
        raise ValueError(f"X of dtype {X.dtype} is not accepted; pass numbers "
                         "(float32 for most torch modules)")


def train_scoring_uncached(net):
    """Turn caching off, with a warning, for every ``EpochScoring`` and
    ``BatchScoring`` that scores the training data with cached predictions:
    the workers return sums of losses and gradients, not predictions. Such
    a scorer then predicts the training data on the client, as skorch does
    with ``use_caching=False``: ``EpochScoring`` the training set after
    each epoch, ``BatchScoring`` each update's rows after its step. The
    user's callback objects are left as they are; ``callbacks_`` gets
    copies.
    """
    changed = []
    for i, (name, cb) in enumerate(net.callbacks_):
        if not (isinstance(cb, (EpochScoring, BatchScoring)) and cb.on_train):
            continue
        if net.use_caching is True:
            raise ValueError(
                f"use_caching=True is not accepted with the training-set "
                f"score {cb.name or name!r} ({type(cb).__name__}(on_train=True)): "
                "the workers return sums, not predictions; use "
                "use_caching='auto' or False")
        if net.use_caching == "auto" and cb.use_caching:
            cb = copy.copy(cb)
            cb.use_caching = False
            net.callbacks_[i] = (name, cb)
            changed.append(cb.name or name)
    if changed:
        warnings.warn(
            f"training-set scores {changed} (EpochScoring or BatchScoring with "
            "on_train=True) are computed without caching (use_caching=False): "
            "the workers return sums, not predictions, so the client predicts "
            "the training data again (EpochScoring: after each epoch; "
            "BatchScoring: each update's rows, after its step)",
            ScoringCacheWarning, stacklevel=4)


def is_dask_frame(obj):
    """Whether ``obj`` is a dask DataFrame or Series (dask.dataframe is not
    imported for that: it is only loaded where someone made a frame)."""
    dd = sys.modules.get("dask.dataframe")
    return dd is not None and isinstance(obj, (dd.DataFrame, dd.Series))


def dask_frame_as_array(frame, name, dtype):
    """A dask DataFrame or Series as a lazy dask array of ``dtype``.

    Every partition is converted where it is, when the fit places it: the
    frame's rows never come to the client, and its partitions' lengths are
    measured once they are in memory on the workers (the user's graph, a
    Parquet read say, runs once for the training data). Raise ValueError
    naming the first column that is not numbers (bool, int or float).

    >>> import pandas as pd, dask.dataframe as dd
    >>> ddf = dd.from_pandas(pd.DataFrame({"a": [1, 2], "s": ["x", "y"]}),
    ...                      npartitions=1)
    >>> X = dask_frame_as_array(ddf[["a"]], "X", "float32")
    >>> X.shape, X.dtype  # the rows are counted where they are, in the fit
    ((nan, 1), dtype('float32'))
    >>> X.compute()
    array([[1.],
           [2.]], dtype=float32)
    >>> dask_frame_as_array(ddf, "X", "float32")
    Traceback (most recent call last):
    ...
    ValueError: X's column 's' of dtype string is not accepted; columns must hold numbers (bool, int or float): select the numeric ones (ddf[["a", "b"]]) or encode this one as numbers first (dask_ml.preprocessing: Categorizer, DummyEncoder, LabelEncoder)
    """
    import pandas as pd

    columns = (frame.dtypes.items() if frame.ndim == 2 else [(frame.name, frame.dtype)])
    for column, column_dtype in columns:
        # Nullable pandas dtypes (Int64, boolean) count: a missing value
        # becomes NaN in float32 and the fit's finiteness check names it.
        if not pd.api.types.is_numeric_dtype(column_dtype):
            raise ValueError(
                f"{name}'s column {column!r} of dtype {column_dtype} is not "
                "accepted; columns must hold numbers (bool, int or float): "
                'select the numeric ones (ddf[["a", "b"]]) or encode this one '
                "as numbers first (dask_ml.preprocessing: Categorizer, "
                "DummyEncoder, LabelEncoder)")
    # pandas hands out read-only (copy-on-write), column-major arrays: such
    # blocks are copied once, on their worker, into the writable row-major
    # arrays that torch and the fit's bit-for-bit sums expect.
    return frame.astype(dtype).to_dask_array().map_blocks(
        np.require, requirements="CW", dtype=dtype)


def check_batch_scoring(net, X_train):
    """Refuse ``BatchScoring(on_train=True)`` where the client does not
    hold the training rows it would score (a dask array's stay on the
    workers)."""
    names = [name for name, cb in net.callbacks_
             if isinstance(cb, BatchScoring) and cb.on_train]
    if names and isinstance(X_train, da.Array):
        raise ValueError(
            f"callbacks {names}: BatchScoring(on_train=True) is not accepted "
            "with a dask array X: it scores every update's rows on the client, "
            "and a dask array's rows stay on the workers; use "
            "EpochScoring(on_train=True), or numpy input")


def batch_rows(X_train, y_train, indices):
    """``(X, y)`` of one update's rows (``indices`` of the training data),
    as ``BatchScoring(on_train=True)`` scores them: X an array, a
    scipy.sparse matrix or a dict of arrays."""
    X = X_train[indices]
    return (X.X if isinstance(X, Rows) else X), y_train[indices]
