"""From ``fit``'s arguments to the training rows the cluster gets.

skorch's split of the data into training and validation sets, dask arrays
and DataFrames (which stay on the cluster), and checks on a few rows, on the
client, that fail fast, before any data is placed:

- :func:`check_loss_on_client`: the module and criterion take the data (X
  of a dtype the module does not take, float64 from scikit-learn's
  transformers say, is converted to the module's dtype where that makes it
  fit);
- :func:`check_chunks`: the net's ``infer`` and ``get_loss`` run on a copy
  of the net as the workers get it, and the loss adds up over chunks
  exactly as skorch computes it on the whole batch.

The conversions themselves are in :mod:`dask_adadamp._fitinputs`.
"""
import math
import warnings

import dask
import dask.array as da
import numpy as np
import torch

from . import _netcopy as netcopy
from ._fitinputs import (as_arrays, as_dtype, check_arrays, n_rows,
                         split_fit_params, train_indices, train_rows)
from ._process import local_device, seeded
from .exceptions import CustomizationError


def split(net, X, y, fit_params, split_params):
    """Training rows for the cluster, skorch's datasets, the fit parameters
    every chunk gets as they are, and the number of rows the user passed
    (which error messages name)."""
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
        return X, y, None, None, constant, X.shape[0]
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
    return X_train, y_train, dataset_train, dataset_valid, constant, n


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


def check_loss_on_client(net, X, fit_params, n_given=None):
    """Fail fast, before the cluster is touched, if the module cannot take
    this X; return the dtype X is to be converted to, or None where the
    module takes X as it is.

    X (or each array of a dict X) is taken as it is where the module takes
    it; where it does not, and the module takes it converted to the dtype
    of the module's parameters (float64 X from scikit-learn's transformers
    for a float32 module, say), X is converted to that dtype, once, where
    it is placed. The message names the shape of X as the user passed it
    (``n_given`` rows), not the training split's.

    The same 2-row forward initializes lazy parameters
    (``torch.nn.LazyLinear``), seeded like the module itself.
    """
    n_given = X.shape[0] if n_given is None else n_given
    Xs = head(X)
    if isinstance(Xs, netcopy.Rows):
        Xs, own = Xs.inputs()
        fit_params = {**fit_params, **own}
    lazy = netcopy.has_lazy_parameters(net)
    net._set_training(False)
    try:
        with torch.no_grad(), seeded(net.seed_, enabled=lazy):
            try:
                net.infer(Xs, **fit_params)
                return None
            except Exception as exc:
                error = exc
            dtype = module_dtype(net)
            converted = as_dtype(Xs, dtype) if dtype is not None else Xs
            if converted is not Xs:
                try:
                    net.infer(converted, **fit_params)
                    return dtype
                except Exception as exc:
                    error = exc
    finally:
        net._set_training(True)
    tried = "" if converted is Xs else f", as it is or converted to {dtype}"
    raise ValueError(
        f"X of shape {(n_given, *X.shape[1:])} and dtype {X.dtype} does not "
        f"fit the module {type(net.module_).__name__}{tried}: {error}") from error


def module_dtype(net):
    """The numpy dtype of the net's first floating-point parameter, or None.

    >>> from skorch import NeuralNetRegressor
    >>> module_dtype(NeuralNetRegressor(torch.nn.Linear, module__in_features=2,
    ...                                 module__out_features=1).initialize())
    dtype('float32')
    """
    for p in netcopy.net_parameters(net):
        if p.dtype.is_floating_point:
            return np.dtype(str(p.dtype).removeprefix("torch."))
    return None


def check_chunks(net, drop, X, y, fit_params, n_given=None):
    """Run the net's ``infer`` and ``get_loss`` on the first training rows
    as a worker runs them on a chunk, on the client, before any data is
    placed; return how a chunk's loss adds up to the update's, and why.

    All on the net as the workers get it (``drop``: more attributes that
    stay on the client; see :func:`dask_adadamp._netcopy.as_on_workers`), so
    a use of the client's history, callbacks or optimizers raises
    :class:`~dask_adadamp.exceptions.CustomizationError` here rather than on
    a worker:

    - the loss of 2 rows in validation mode, as skorch's first batch: a
      ``ValueError`` names y's shape (with ``n_given`` rows, as the user
      passed it) where the criterion does not take it, and torch's warning
      of a loss that broadcasts mismatched shapes is passed on, as skorch
      passes it on from its first batch (the workers' copies of it would
      stay in their logs);
    - a training step on up to 3 rows (forward and backward);
    - ``get_loss`` of those rows compared with its values on the first row
      and on the rest.

    Returns
    -------
    mean : bool or None
        True where the batch's loss is the rows' mean of the parts (a mean
        over the rows, plus terms added once per batch such as a penalty on
        the weights: each chunk's loss is weighted by its rows); False
        where it is their sum (the chunks' losses add up); None where it is
        neither (a mean weighted by the batch's sum of sample weights, a
        target broadcast against the outputs): only an update of one chunk
        is then exact, and the fit refuses others
        (:class:`~dask_adadamp.exceptions.LossReductionError`). Where the
        values cannot tell (one row, losses of 0 or not finite), the
        criterion's ``reduction`` does
        (:func:`dask_adadamp._netcopy.is_mean_reduced`).
    why : str or None
        With ``mean`` None, what the check saw.
    """
    n_given = y.shape[0] if n_given is None else n_given
    device = local_device(net.device) or "cpu"
    view = netcopy.as_on_workers(net, drop)
    Xs, ys = head(X, 3), head(y, 3)
    n = len(ys)
    own = {}
    if isinstance(Xs, netcopy.Rows):
        Xs, own = Xs.inputs()
    Xs = ({k: torch.as_tensor(v, device=device) for k, v in Xs.items()}
          if isinstance(Xs, dict) else torch.as_tensor(Xs, device=device))
    ys = torch.as_tensor(ys, device=device)
    # The view shares the net's parameters: its backward must leave their
    # gradients as they were.
    params = netcopy.net_parameters(net)
    grads = [p.grad for p in params]
    try:
        with seeded(net.seed_):
            two = slice(0, 2)
            broadcasts = check_targets(view, _rows(Xs, two, n), ys[two],
                                       {**fit_params, **_rows(own, two, n)},
                                       (n_given, *y.shape[1:]), y.dtype)
            fit_params = {**fit_params, **own}
            netcopy.set_training(view, True)
            for p in params:
                p.grad = None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # passed on once, above
                y_pred = view.infer(Xs, **fit_params)
                view.get_loss(y_pred, ys, X=Xs, training=True).backward()
                if n < 2:
                    return netcopy.is_mean_reduced(net), None
                with torch.no_grad():
                    y_pred = _detached(y_pred)
                    whole, first, rest = (
                        float(view.get_loss(_rows(y_pred, s, n), ys[s],
                                            X=_rows(Xs, s, n), training=True))
                        for s in (slice(0, n), slice(0, 1), slice(1, n)))
    finally:
        for p, grad in zip(params, grads):
            p.grad = grad
    scale = max(abs(whole), abs(first), abs(rest))
    mean = (first + (n - 1) * rest) / n
    is_mean = abs(whole - mean) <= 1e-4 * scale
    is_sum = abs(whole - (first + rest)) <= 1e-4 * scale
    if is_mean and is_sum or scale == 0 or not math.isfinite(scale):
        return netcopy.is_mean_reduced(net), None  # the values cannot tell
    if is_mean or is_sum:
        return is_mean, None
    if broadcasts:
        return None, (
            "the criterion broadcasts y against the outputs (torch warned), so "
            "the loss compares every output with every target of the batch, "
            "and a chunk sees only its own: give y the outputs' shape (y of "
            f"shape {(n_given, *y.shape[1:])}: y.reshape(-1, 1) for outputs "
            "of shape (n, 1))")
    return None, (
        f"on the first {n} training rows it is {whole:.6g}, on the first row "
        f"and the other {n - 1} {first:.6g} and {rest:.6g}: neither their mean "
        f"weighted by rows ({mean:.6g}) nor their sum ({first + rest:.6g}). "
        "Return a mean or a sum over the rows: with sample weights and "
        "criterion__reduction='none', (w * loss).mean() or (w * loss).sum(), "
        "not (w * loss).sum() / w.sum()")


def check_targets(net, Xs, ys, fit_params, shape, dtype):
    """The loss of a few rows in validation mode, as skorch's first batch;
    ``shape`` and ``dtype`` name y in the message. Whether the loss
    broadcasts the targets against the outputs (torch warns)."""
    netcopy.set_training(net, False)
    with torch.no_grad():
        y_pred = net.infer(Xs, **fit_params)
    try:
        with torch.no_grad():
            # torch only warns when a loss broadcasts mismatched shapes
            # (MSELoss of (n, 1) against (n,)); skorch passes the warning on
            # from the first batch, and so does this, with the shapes.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                net.get_loss(y_pred, ys, X=Xs, training=False)
    except CustomizationError:
        raise
    except Exception as exc:
        criterion = type(getattr(net, "criterion_", None)).__name__
        raise ValueError(
            f"y of shape {shape} and dtype {dtype} does not fit the criterion "
            f"{criterion} for outputs of shape "
            f"{tuple(getattr(y_pred, 'shape', ()))}: {exc}") from exc
    broadcasts = False
    for w in caught:  # the loss's own warnings, as the fit would give them
        message = str(w.message)
        if "broadcasting" in message:  # torch's: name the whole data's shapes
            broadcasts = True
            outputs = ", ".join(["n", *map(str, tuple(getattr(y_pred, "shape", ()))[1:])])
            message = (f"y of shape {shape} against outputs of shape "
                       f"({outputs}{',' if outputs == 'n' else ''}): {message}")
        warnings.warn_explicit(message, w.category, w.filename, w.lineno)
    return broadcasts


def _detached(value):
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (tuple, list)):
        return type(value)(_detached(v) for v in value)
    return value


def _rows(value, rows, n):
    """``value[rows]`` for what holds one entry per row (tensors and arrays of
    ``n`` rows, inside dicts, tuples and lists); anything else as it is."""
    if isinstance(value, dict):
        return {k: _rows(v, rows, n) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_rows(v, rows, n) for v in value)
    if getattr(value, "shape", ()) and value.shape[0] == n:
        return value[rows]
    return value


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
