"""From ``fit``'s arguments to the training rows the cluster gets.

skorch's split of the data into training and validation sets, dask arrays
and DataFrames (which stay on the cluster), and a 2-row forward pass and
loss on the client that fails fast, before any data is placed, when the
module or criterion cannot take the data. The conversions themselves are
in :mod:`dask_adadamp._fitinputs`.
"""
import math
import warnings

import dask
import dask.array as da
import numpy as np
import torch

from . import _netcopy as netcopy
from ._fitinputs import (as_arrays, check_arrays, n_rows, split_fit_params,
                         train_indices, train_rows)


def split(net, X, y, fit_params, split_params):
    """Training rows for the cluster, skorch's datasets, and the fit
    parameters every chunk gets as they are."""
    X, y = net._dask_frames_as_arrays(X, y)
    if isinstance(X, da.Array) or isinstance(y, da.Array):
        if net.train_split is not None:
            raise ValueError(
                f"train_split={net.train_split!r} is not accepted with "
                "dask arrays or DataFrames; pass train_split=None and score "
                "held-out data with est.score(X_test, y_test)")
        X, y = check_dask(net, X, y)
        per_example, constant = split_fit_params(fit_params, X.shape[0])
        if per_example:
            raise ValueError(
                f"fit parameters {sorted(per_example)} hold one value per "
                "example, which is not accepted with dask arrays or "
                "DataFrames; pass numpy arrays, or make them columns of X")
        return X, y, None, None, constant
    if y is None and not isinstance(X, torch.utils.data.Dataset):
        net.check_data(X, y)
    given, y_given = X, y
    X, y = as_arrays(X, y)
    check_arrays(X, y)
    net.check_data(X, y)
    n = n_rows(X)
    if isinstance(X, dict):  # skorch's own check and message
        net._merge_x_and_fit_params(X, fit_params)
    per_example, constant = split_fit_params(fit_params, n)
    # A Dataset is split as the user gave it (skorch's stratified split
    # refuses y=None), arrays as arrays.
    if isinstance(given, torch.utils.data.Dataset):
        dataset, y = given, y_given
    else:
        dataset = net.get_dataset(X, y)
    dataset_train, dataset_valid = net.get_split_datasets(dataset, y, **split_params)
    X_train, y_train = as_arrays(dataset_train, None)
    if n_rows(X_train) == 0:
        raise ValueError("the training split holds no examples; "
                         "pass more data or train_split=None")
    rows = None
    if per_example:
        rows = train_indices(dataset, dataset_train, n)
        if rows is None:
            raise ValueError(
                f"fit parameters {sorted(per_example)} hold one value per "
                f"example, but train_split={net.train_split!r} made a "
                "training set of its own, so their training rows are "
                "unknown; use train_split=None or a split returning "
                "Subsets of the dataset (skorch's ValidSplit)")
    X_train = train_rows(X_train, per_example, rows)
    return X_train, y_train, dataset_train, dataset_valid, constant


def check_dask(net, X, y):
    if y is None:
        raise ValueError("y=None is not accepted with a dask X; "
                         "pass the targets as y")
    X = da.asarray(X)
    y = da.asarray(y)
    if X.ndim == 0 or X.shape[0] == 0:
        raise ValueError(f"X of shape {X.shape} holds no examples")
    if not (np.isnan(X.shape[0]) or np.isnan(y.shape[0])) and X.shape[0] != y.shape[0]:
        raise ValueError(
            f"X has {X.shape[0]} rows but y has {y.shape[0]}; "
            "they must have the same length")
    net.check_data(X, y)
    return X, y


def check_loss_on_client(net, X, y, fit_params):
    """Fail fast, before the cluster is touched, if the module or the
    criterion cannot take this data.

    The same 2-row forward initializes lazy parameters
    (``torch.nn.LazyLinear``), seeded like the module itself.
    """
    Xs, ys = head(X), head(y)
    if isinstance(Xs, netcopy.Rows):
        Xs, own = Xs.inputs()
        fit_params = {**fit_params, **own}
    lazy = netcopy.has_lazy_parameters(net)
    net._set_training(False)
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[], enabled=lazy):
            if lazy:
                torch.manual_seed(net.seed_)
            try:
                y_pred = net.infer(Xs, **fit_params)
            except Exception as exc:
                raise ValueError(
                    f"X of shape {tuple(X.shape)} and dtype {X.dtype} does "
                    f"not fit the module {type(net.module_).__name__}: "
                    f"{exc}") from exc
            try:
                # torch only warns when a loss broadcasts mismatched shapes
                # (MSELoss of (n, 1) against (n,)); skorch passes the warning
                # on from the first batch. The workers' copy would stay in
                # their logs, so it is passed on from here, with the shapes.
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    net.get_loss(y_pred, torch.as_tensor(ys), X=Xs, training=False)
            except Exception as exc:
                criterion = type(getattr(net, "criterion_", None)).__name__
                raise ValueError(
                    f"y of shape {tuple(y.shape)} and dtype {y.dtype} does "
                    f"not fit the criterion {criterion} for outputs of "
                    f"shape {tuple(getattr(y_pred, 'shape', ()))}: {exc}"
                ) from exc
    finally:
        net._set_training(True)
    for w in caught:  # the loss's own warnings, as the fit would give them
        message = str(w.message)
        if "broadcasting" in message:  # torch's: name the whole data's shapes
            outputs = ", ".join(["n", *map(str, tuple(getattr(y_pred, "shape", ()))[1:])])
            message = (f"y of shape {tuple(y.shape)} against outputs of shape "
                       f"({outputs}{',' if outputs == 'n' else ''}): {message}")
        warnings.warn_explicit(message, w.category, w.filename, w.lineno)


def unknown_rows(a):
    return any(math.isnan(c) for c in a.chunks[0])


def head(a, n=2):
    """The first ``n`` rows of an array; of a dask array, computed from its
    first non-empty block, whose size need not be known."""
    if not isinstance(a, da.Array):
        return a[:n]
    if not unknown_rows(a):
        return a[:n].compute()
    a = a.rechunk({axis: -1 for axis in range(1, a.ndim)})
    for block in a.to_delayed().ravel():
        rows = dask.delayed(lambda b: b[:n])(block).compute()
        if len(rows):
            return np.require(rows, requirements="W")  # torch takes it
    raise ValueError(f"the dask array of shape {a.shape} holds no examples")
