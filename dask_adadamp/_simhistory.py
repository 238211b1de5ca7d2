"""What :mod:`dask_adadamp.simulate` reads: the batch size of every model
update of a fit, from a history in any common shape, and quantities with
their units.

A history comes as a dask-adadamp or skorch ``History`` (or the fitted
estimator), a table (a pandas DataFrame or the path of a CSV file) with one
row per update or per epoch, or a bare sequence of per-update batch sizes.
Each shape has its traps; every one is an error or a warning that names the
value and what to pass instead.
"""
import math
import numbers
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from dask.utils import parse_bytes, parse_timedelta

from ._history import epochs as history_epochs, update_rows

# Columns that hold the batch size, the first present wins: adadamp's
# ``partial_fit__batch_size`` and ``batch_size_`` are the sizes used (its
# ``batch_size`` is the constructor's initial one); skorch's per-batch key is
# ``train_batch_size``.
BATCH_COLUMNS = ("partial_fit__batch_size", "batch_size_", "batch_size",
                 "train_batch_size")
# Model updates and examples counted per epoch (cumulative, or each epoch's).
UPDATE_COLUMNS = ("n_updates", "model_updates")
#: The keys of an update's row in a history: dask-adadamp's ``batch_size``,
#: or a plain skorch net's ``train_batch_size`` (validation rows have neither).
SIZE_KEYS = ("batch_size", "train_batch_size")
EXAMPLE_COLUMNS = ("n_examples", "n_data")
UPDATES = ("cumulative", "per_epoch")


class Schedule(NamedTuple):
    """One fit: every update's batch size, its epochs (NaN when unknown),
    and per update the workers its table recorded (None when it did not)."""
    sizes: np.ndarray
    epochs: float
    workers: np.ndarray = None


def read(run, n_train=None, updates=None):
    """The :class:`Schedule` of ``run``, in any shape :func:`simulate` takes.

    >>> read([64, 64, 128], n_train=128).epochs
    2.0
    >>> table = pd.DataFrame({"epoch": [1, 2], "batch_size": [64, 128],
    ...                       "model_updates": [2, 3]})
    >>> read(table).sizes.tolist(), read(table).epochs
    ([64, 64, 128], 2.0)
    """
    if updates not in (None, *UPDATES):
        raise ValueError(f"updates={updates!r} is not accepted; pass None (read "
                         f"from the counts), or one of {UPDATES}")
    if isinstance(run, (str, os.PathLike)):
        run = pd.read_csv(run)
    if isinstance(run, pd.DataFrame):
        return _from_table(run, n_train, updates)
    if isinstance(run, (Sequence, np.ndarray, pd.Series)) and not isinstance(
            run, str) and len(run) == 0:
        raise ValueError("an empty history or list of batch sizes is not accepted; a "
                         "fit needs at least one model update")
    if isinstance(run, (pd.Series, np.ndarray)) or (
            isinstance(run, Sequence) and not isinstance(run, str) and run
            and not any(isinstance(item, Mapping) for item in run)):
        return _from_list(run, n_train)
    if isinstance(run, (bytes, Mapping)) or not (
            hasattr(run, "history") or isinstance(run, Sequence)):
        raise ValueError(
            f"a {type(run).__name__} is not accepted; pass a history (skorch "
            "History, list of epoch dicts or fitted estimator), a table "
            "(pandas.DataFrame or CSV path) or a list of per-update batch sizes")
    return _from_history(run)


def _from_history(run):
    epochs_ = history_epochs(run)
    rows = update_rows(epochs_, SIZE_KEYS)
    if not rows:
        raise ValueError("the history has no model updates: no entry of "
                         "history[epoch]['batches'] has the key 'batch_size', which "
                         "DaskClassifier and DaskRegressor record for every update "
                         "(or 'train_batch_size', skorch's)")
    sizes = [row.get("batch_size", row.get("train_batch_size")) for row in rows]
    return Schedule(_sizes(sizes, "the history's batch sizes"), float(len(epochs_)))


def _from_list(run, n_train):
    sizes = _sizes(list(run), "batch sizes")
    if n_train is None:
        return Schedule(sizes, float("nan"))
    epochs, ends = _count_epochs(sizes, n_train)
    _warn_if_per_epoch(sizes, ends, epochs, n_train)
    return Schedule(sizes, epochs)


def _count_epochs(sizes, n_train):
    """Epochs of per-update sizes, each epoch ending once it has seen
    ``n_train`` examples (skorch's last batch fills it exactly, adadamp's
    overshoots): the count, and whether each update ended an epoch."""
    ends = np.zeros(len(sizes), dtype=bool)
    seen = 0
    for i, size in enumerate(sizes):
        seen += int(size)
        if seen >= n_train:
            ends[i], seen = True, 0
    return float(ends.sum() + seen / n_train), ends


def _warn_if_per_epoch(sizes, ends, epochs, n_train):
    """A per-epoch list read as per-update batches changes its size in the
    middle of epochs, and less often than once an epoch (a per-update
    schedule changes at epoch ends, or at nearly every update)."""
    starts = np.r_[True, ends[:-1]]  # which updates begin an epoch
    changes = np.flatnonzero(sizes[1:] != sizes[:-1]) + 1
    # A smaller last batch that ends its epoch (skorch's) is no change.
    mid = [i for i in changes if not starts[i] and not (ends[i] and sizes[i] < sizes[i - 1])]
    # Most changes mid-epoch (one may meet an epoch's start by chance).
    if mid and 2 * len(mid) > len(changes) and len(changes) < epochs:
        raise_or = (f"{len(sizes)} batch sizes change {len(changes)} times, each in the "
                    f"middle of an epoch of n_train={n_train} examples (first at update "
                    f"{mid[0]}, {sizes[mid[0] - 1]} -> {sizes[mid[0]]})")
        warnings.warn(f"{raise_or}: is this one batch size per epoch? A list is read "
                      "as one batch size per model update; for per-epoch sizes pass a "
                      "table, pandas.DataFrame({'epoch': ..., 'batch_size': ...}) with "
                      "n_train, or a 'model_updates' column", UserWarning, stacklevel=4)


def _from_table(table, n_train, updates):
    if table.empty:
        raise ValueError("an empty table is not accepted; a fit needs at least one "
                         "model update")
    column = next((c for c in BATCH_COLUMNS if c in table.columns), None)
    if column is None:
        raise ValueError(f"a table with columns {list(table.columns)[:12]!r} is not "
                         f"accepted: it has no batch-size column; name it one of "
                         f"{BATCH_COLUMNS}")
    counts = next((c for c in UPDATE_COLUMNS if c in table.columns), None)
    epoch = table["epoch"] if "epoch" in table.columns else None
    if counts is None and (epoch is None or epoch.duplicated().any()):
        # One row per update: its epoch column (if any) counts the epochs.
        sizes = _sizes(table[column], f"column {column!r}")
        if epoch is not None:
            return Schedule(sizes, float(epoch.nunique()))
        return _from_list(sizes, n_train)
    # One row per epoch.
    sizes = _sizes(table[column], f"column {column!r}")
    if counts is not None:
        per_epoch = _per_epoch(table[counts], counts, updates)
    elif n_train is None:
        raise ValueError(
            f"a per-epoch table (one row per epoch: 'epoch' does not repeat) without "
            f"update counts is not accepted without n_train; add a cumulative "
            f"{' or '.join(map(repr, UPDATE_COLUMNS))} column or pass n_train")
    else:
        per_epoch = None
    examples = next((c for c in EXAMPLE_COLUMNS if c in table.columns), None)
    if per_epoch is None:  # skorch's epochs: the last batch makes up n_train
        seen = [n_train] * len(sizes)
    elif examples is not None:
        seen = _per_epoch(table[examples], examples, None)
    else:  # adadamp's epochs: full batches, the last one past n_train
        seen = [None] * len(sizes)
    out, workers = [], []
    recorded = table["n_workers"].to_numpy() if "n_workers" in table.columns else None
    for e, size in enumerate(sizes):
        n = int(per_epoch[e]) if per_epoch is not None else -(-n_train // int(size))
        epoch_sizes = _split(int(size), n, seen[e])
        out.extend(epoch_sizes)
        if recorded is not None:
            workers.extend([recorded[e]] * len(epoch_sizes))
    return Schedule(np.asarray(out, dtype=np.int64), float(len(sizes)),
                    None if recorded is None else np.asarray(workers))


def _per_epoch(values, name, updates):
    """Each epoch's count from a column: differences of a cumulative count
    (strictly increasing) or the counts themselves."""
    counts = _sizes(values, f"column {name!r}", zero=True)
    if updates is None:
        updates = ("cumulative" if len(counts) == 1 or (np.diff(counts) > 0).all()
                   else "per_epoch")
    return np.diff(counts, prepend=0) if updates == "cumulative" else counts


def _split(size, n, seen):
    """The ``n`` updates of an epoch at batch ``size`` that saw ``seen``
    examples (None: unknown): all full (adadamp, or no count of examples),
    one short last batch (skorch), or an even split where the epoch's size
    varied (the table's size is then its largest)."""
    if n <= 0:
        return []
    if seen is None or seen == n * size:
        return [size] * n
    if (n - 1) * size < seen < n * size:
        return [size] * (n - 1) + [int(seen) - (n - 1) * size]
    return [len(part) for part in np.array_split(np.empty(int(seen)), n)]


def _sizes(values, what, zero=False):
    """Integers from a list or column: integral floats (128.0, as pandas
    writes a column with a gap) are taken; NaN, fractions, non-numbers and
    sizes below 1 (0 allowed for counts) are refused, by position."""
    values = list(values)
    if not values:
        raise ValueError("batch_sizes=[] is not accepted; a fit needs at least one "
                         "model update")
    low = 0 if zero else 1

    def ok(v):
        return (isinstance(v, numbers.Real) and not isinstance(v, bool)
                and math.isfinite(v) and float(v).is_integer() and v >= low)
    bad = [i for i, v in enumerate(values) if not ok(v)]
    if bad:
        shown = [values[i] for i in bad[:5]]
        kind = "integer >= 0" if zero else "positive integer"
        raise ValueError(f"{what} {shown!r} (at positions {bad[:5]}) are not accepted; "
                         f"every value must be a {kind}" + (
                             "; drop the rows without one" if any(
                                 isinstance(v, float) and math.isnan(v) for v in shown)
                             else ""))
    return np.asarray(values, dtype=np.float64).astype(np.int64)


# --- units -----------------------------------------------------------------

_RATE = re.compile(r"^\s*([0-9.]+(?:e[+-]?[0-9]+)?)\s*([kKMGTP]?i?)(bit|b|B)"
                   r"\s*(?:/\s*s|ps)\s*$")


def seconds(name, value):
    """Seconds from a number or a string with its unit (``"50 us"``,
    ``"58.55 ms"``: dask's :func:`~dask.utils.parse_timedelta`).

    >>> seconds("task_cost", "58.55 ms")
    0.05855
    """
    if isinstance(value, str):
        try:
            return parse_timedelta(value)
        except (ValueError, KeyError):
            raise ValueError(f"{name}={value!r} is not accepted; give seconds as a "
                             "number or a string such as '50 us' or '12 ms'") from None
    return value


def bytes_per_second(name, value):
    """Bytes per second from a number or a string with its unit: bits
    (``"54 Gbit/s"``, ``"10 Gbps"``) or bytes (``"1.25 GB/s"``, ``"100 MiB/s"``,
    through dask's :func:`~dask.utils.parse_bytes`).

    >>> bytes_per_second("bandwidth", "54 Gbit/s")
    6750000000.0
    """
    if not isinstance(value, str):
        return value
    match = _RATE.match(value)
    if match is None:
        raise ValueError(f"{name}={value!r} is not accepted; give bytes per second "
                         "as a number or a string such as '54 Gbit/s', '10 Gbps' or "
                         "'1.25 GB/s'")
    number, prefix, unit = match.groups()
    per = parse_bytes(f"1 {prefix}B")
    return float(number) * per / (8 if unit in ("bit", "b") else 1)
