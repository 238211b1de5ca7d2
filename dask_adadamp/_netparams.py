"""The Dask nets' own parameters: checked where a fit starts, and the
batch-size schedule built from ``batch_size``.

Each error names the value and what is accepted; the checks of the
schedules' own parameters are in :mod:`dask_adadamp._validation`.
"""
import numbers

import numpy as np
import torch
from sklearn.base import clone
from skorch.callbacks import ProgressBar as SkorchProgressBar

from ._engine import tree_policy
from ._fitinputs import train_batch_size
from ._validation import check_argument, is_positive_int
from .callbacks import ProgressBar
from .dampers import BaseDamper, Constant, GradientDescent


def check_params(net):
    """Raise ValueError, naming the value, for a parameter of the Dask nets
    out of range."""
    bs = net.batch_size
    if not (is_positive_int(bs) or bs == -1 or isinstance(bs, BaseDamper) or (
            isinstance(bs, type) and issubclass(bs, BaseDamper))):
        raise ValueError(
            f"batch_size={bs!r} is not accepted; pass a positive integer, "
            "-1 (full-batch gradient descent, as in skorch), or a schedule "
            "from dask_adadamp.dampers (a class or an instance)")
    check_argument("grads_per_worker", net.grads_per_worker, "a positive integer")
    for name in ("max_batch_size", "min_workers", "max_workers"):
        check_argument(name, getattr(net, name), "None or a positive integer")
    if (net.min_workers is not None and net.max_workers is not None
            and net.min_workers > net.max_workers):
        raise ValueError(
            f"min_workers={net.min_workers} is more than max_workers="
            f"{net.max_workers}; min_workers must be at most max_workers")
    rs = net.random_state
    if not (rs is None or isinstance(rs, (np.random.RandomState, np.random.Generator))
            or (isinstance(rs, numbers.Integral) and not isinstance(rs, bool)
                and 0 <= rs < 2**32)):
        raise ValueError(
            f"random_state={rs!r} is not accepted; use None, an integer "
            "in [0, 2**32) or a numpy RandomState")
    tree_policy()  # a bad dask config value fails before any cluster work


def check_device_name(device):
    """Raise ValueError unless ``device`` is None or a torch device."""
    # Only where a fit starts: initialize() passes any device to the
    # modules' .to(), as skorch does.
    try:
        if device is not None:
            torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device={device!r} is not accepted; use a torch device "
            "such as 'cpu', 'cuda' or 'cuda:1'") from exc


def check_callbacks(net):
    """Refuse callbacks that cannot work with a batch-size schedule."""
    if isinstance(net.batch_size, numbers.Integral):
        return
    for name, cb in net.callbacks_:
        if (isinstance(cb, SkorchProgressBar) and not isinstance(cb, ProgressBar)
                and cb.batches_per_epoch == "auto"):
            raise ValueError(
                f"callback {name!r}: skorch's ProgressBar(batches_per_epoch="
                "'auto') divides by batch_size, which is a schedule here "
                f"({net.batch_size!r}); use dask_adadamp.ProgressBar(), "
                "which counts examples, or ProgressBar(batches_per_epoch="
                "'count')")


def build_damper(net):
    """The schedule ``batch_size`` and ``batch_size__*`` (or
    ``iterator_train__batch_size``) ask for, checked."""
    kwargs = net.get_params_for("batch_size")
    spec = net.batch_size
    train_size = train_batch_size(net)
    if train_size is not None:
        if not isinstance(spec, numbers.Integral):
            raise ValueError(
                f"iterator_train__batch_size={train_size!r} and the schedule "
                f"batch_size={spec!r} both set the training batch size; "
                "pass one of them")
        spec = train_size
    if spec == -1:  # skorch's whole training set per batch
        damper = GradientDescent()
    elif isinstance(spec, numbers.Integral):
        if kwargs:
            raise ValueError(
                f"{sorted('batch_size__' + k for k in kwargs)} need a "
                f"schedule, but batch_size={spec!r} is an int; pass a "
                "class from dask_adadamp.dampers as batch_size")
        damper = Constant(int(spec))
    elif isinstance(spec, type):
        try:
            damper = spec(**kwargs)
        except TypeError as exc:
            raise ValueError(f"batch_size__* parameters {sorted(kwargs)} "
                             f"do not fit {spec.__name__}: {exc}") from exc
    else:
        damper = clone(spec).set_params(**kwargs)
    damper.check()
    return damper
