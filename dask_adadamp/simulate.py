"""Simulated wall-clock time of a recorded fit on a cluster you describe.

A fit's history says how many examples every model update used. This
module turns those batch sizes into the minutes the same updates would take
on a cluster you do not have: how much a growing batch saves when larger
batches are spread over more workers. The cluster is a small model,
:class:`Cluster`, with one term per cost a real cluster has; each is a line
of ``docs/simulate.md``. For update ``k`` of ``B_k`` examples:

- Workers ``P = min(max_workers, ceil(B / grads_per_worker))``; tasks run
  ``c = min(P, concurrency)`` at a time, in ``ceil(P / c)`` rounds.
- A task (one worker's share) costs ``task_cost + grad_time * ceil(B / P)``
  plus the reduction's transfers: ``"centralized"`` (through the client),
  ``"allreduce"`` (a ring), ``"tree"`` (a binary tree), or None (none, or
  already in ``task_cost``); every round pays its tasks' costs.
- This library's own paths, ``"adadamp-direct"``, ``"adadamp-tree"`` and
  ``"adadamp"`` (the library's choice between them), cut the batch into
  ``C = ceil(B / grads_per_worker)`` chunks: one call per worker carries its
  chunks, the ``c`` cores compute ``ceil(C / c)`` chunks each, and the
  transfers are paid once per update.
- Every update costs ``overhead + overhead_per_worker * P`` besides.

:meth:`Cluster.from_history` measures these terms from a dask-adadamp fit's
own history. Histories come in any common shape (see :func:`simulate`).

Examples
--------
>>> from dask_adadamp.simulate import Cluster, simulate
>>> cluster = Cluster(grad_time="1 ms", grads_per_worker=64, bandwidth="10 Gbit/s")
>>> runs = {"SGD": [64] * 2000, "growing": [64] * 1000 + [512] * 125}
>>> table = simulate(runs, n_params=1_000_000, cluster=cluster, n_train=64_000)
>>> table[["model_updates", "epochs", "max_workers", "minutes", "worker_minutes"]].round(2)
... # doctest: +NORMALIZE_WHITESPACE
          model_updates  epochs  max_workers  minutes  worker_minutes
schedule
SGD                2000     2.0            1     2.69            2.69
growing            1125     2.0            8     1.60            3.43
"""
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from . import _simhistory
from ._validation import KINDS, check_argument

REDUCTIONS = ("centralized", "allreduce", "tree", "adadamp-direct", "adadamp-tree",
              "adadamp", None)
BYTES_PER_PARAM = 4  # float32 weights and gradients
# The library's direct path brings one gradient per chunk back; past this
# many chunks per worker it goes through the tree (dask_adadamp._engine).
DIRECT_CHUNKS_PER_WORKER = 2
# Numbers this large are a unit mistake, not a cluster: e.g. latency=50 meant
# as microseconds, bandwidth=54 as Gbit/s.
_PLAUSIBLE = {"grad_time": (None, 1.0, "'612 us'"), "latency": (None, 1.0, "'50 us'"),
              "task_cost": (None, 60.0, "'58.55 ms'"), "overhead": (None, 60.0, "'13 ms'"),
              "overhead_per_worker": (None, 60.0, "'3.3 ms'"),
              "bandwidth": (1e6, None, "'54 Gbit/s'")}


@dataclass(frozen=True)
class Cluster:
    """The cluster a history is simulated on.

    Times are seconds, or strings with their unit (``"50 us"``, ``"13 ms"``);
    ``bandwidth`` is bytes per second, or a string such as ``"54 Gbit/s"``.

    Parameters
    ----------
    grad_time : float or str
        One example's gradient (forward and backward) on one worker.
    grads_per_worker : int
        Most examples one worker computes per update, as the estimators'
        ``grads_per_worker``: an update of ``B`` examples uses
        ``ceil(B / grads_per_worker)`` workers, up to ``max_workers``.
    max_workers : int or None, default=None
        Workers in the cluster; None follows the batch. When it binds,
        :func:`simulate` warns and counts the updates it capped.
    concurrency : int or None, default=None
        Most tasks computing at once (client threads, or cores when workers
        share a machine); None: every worker at once.
    latency : float or str, default=1e-4
        One message across the network (100 us: TCP within a data center).
    bandwidth : float or str, default=1.25e9
        One link (1.25e9 bytes/s: 10 Gbit/s Ethernet).
    task_cost : float or str, default=0.0
        Every task's fixed cost beside compute and transfers (a model copy,
        a call's deserialization).
    overhead : float or str, default=0.010
        Every update's fixed cost: the client's calls and optimizer step.
        Measure yours with :meth:`from_history`.
    overhead_per_worker : float or str, default=0.0
        Every update's cost per worker it uses (scheduling, replies).
    reduction : str or None, default="centralized"
        How weights go out and gradients come back: ``"centralized"``,
        ``"allreduce"``, ``"tree"``, this library's ``"adadamp-direct"``,
        ``"adadamp-tree"`` or ``"adadamp"``, or None (no transfer term).

    Examples
    --------
    >>> Cluster(grad_time="612 us", grads_per_worker=128, latency="50 us",
    ...         bandwidth="54 Gbit/s", reduction="tree").bandwidth
    6750000000.0
    >>> Cluster(grad_time=1e-3, grads_per_worker=64, bandwidth=54)
    Traceback (most recent call last):
    ...
    ValueError: Cluster(bandwidth=54) is not accepted: a number is bytes per second, and 54 is too small for any network; give the unit, e.g. bandwidth='54 Gbit/s'
    """

    grad_time: float
    grads_per_worker: int
    max_workers: int = None
    concurrency: int = None
    latency: float = 1e-4
    bandwidth: float = 1.25e9
    task_cost: float = 0.0
    overhead: float = 0.010
    overhead_per_worker: float = 0.0
    reduction: str = "centralized"

    _checks: ClassVar[dict] = {"grad_time": "a positive number",
                               "grads_per_worker": "a positive integer",
                               "max_workers": "None or a positive integer",
                               "concurrency": "None or a positive integer",
                               "latency": "a number >= 0",
                               "bandwidth": "a positive number",
                               "task_cost": "a number >= 0",
                               "overhead": "a number >= 0",
                               "overhead_per_worker": "a number >= 0"}

    def __post_init__(self):
        for name, kind in self._checks.items():
            value = getattr(self, name)
            parse = (_simhistory.bytes_per_second if name == "bandwidth"
                     else _simhistory.seconds if "number" in kind
                     and name != "grads_per_worker" else None)
            try:
                parsed = parse(name, value) if parse else value
            except ValueError as error:
                raise ValueError(f"Cluster({error}") from None
            if not KINDS[kind](parsed):
                raise ValueError(f"Cluster({name}={value!r}) is not accepted; {name} "
                                 f"must be {kind}")
            low, high, example = _PLAUSIBLE.get(name, (None, None, None))
            if not isinstance(value, str) and (
                    (low is not None and parsed < low) or (high is not None and parsed >= high)):
                unit = "bytes per second" if name == "bandwidth" else "seconds"
                size = "small" if low is not None else "large"
                raise ValueError(
                    f"Cluster({name}={value!r}) is not accepted: a number is {unit}, and "
                    f"{value!r} is too {size} for any network; give the unit, e.g. "
                    f"{name}={example[1:-1]!r}" if name != "grad_time" else
                    f"Cluster(grad_time={value!r}) is not accepted: a number is seconds "
                    f"per example, and {value!r} is too large; give the unit, e.g. "
                    f"grad_time={example[1:-1]!r} (78.32 ms per 128 examples is "
                    "'612 us')")
            object.__setattr__(self, name, parsed)
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"Cluster(reduction={self.reduction!r}) is not accepted; "
                             f"reduction must be one of {REDUCTIONS}")

    @classmethod
    def from_history(cls, history, grads_per_worker=None, **kwargs):
        """A cluster measured from a dask-adadamp fit's own history.

        Every update's ``compute_ms``, ``comm_ms``, ``bytes_out``,
        ``workers_ms`` and wall-clock time (``worker_s / workers_present``)
        give ``grad_time`` and ``task_cost``, ``latency`` and ``bandwidth``
        (of this library's paths), and ``overhead`` and
        ``overhead_per_worker``; see :func:`dask_adadamp._simcalibrate.calibrate`.

        Parameters
        ----------
        history : skorch History, list of epoch dicts, or fitted estimator
        grads_per_worker : int or None
            The fit's; taken from the estimator when None.
        **kwargs
            Fields of the cluster to predict, e.g. ``max_workers=4``,
            ``concurrency=2`` (the cores, where workers share a machine).

        Returns
        -------
        Cluster
            With ``reduction="adadamp"``.

        Examples
        --------
        >>> history = [{"batches": [
        ...     {"batch_size": 64, "n_workers": 1, "compute_ms": 11.0, "comm_ms": 2.0,
        ...      "bytes_out": 4000, "tree": False, "worker_s": 0.02, "workers_present": 1},
        ...     {"batch_size": 128, "n_workers": 2, "compute_ms": 11.0, "comm_ms": 2.5,
        ...      "bytes_out": 8000, "tree": False, "worker_s": 0.044, "workers_present": 2}]}]
        >>> cluster = Cluster.from_history(history, grads_per_worker=64)
        >>> round(cluster.overhead_per_worker * 1e3, 2), cluster.reduction
        (1.5, 'adadamp')
        """
        from ._simcalibrate import calibrate
        if grads_per_worker is None:
            grads_per_worker = getattr(history, "grads_per_worker", None)
        check_argument("grads_per_worker", grads_per_worker, "a positive integer")
        measured = calibrate(history, grads_per_worker)
        return cls(grads_per_worker=grads_per_worker, reduction="adadamp",
                   **{**measured, **kwargs})


def update_seconds(batch_sizes, n_params, cluster):
    """Simulated seconds of every model update.

    Parameters
    ----------
    batch_sizes : sequence of int
        Examples used by each update, in order.
    n_params : int
        Parameters of the model (weights and gradients travel as float32).
    cluster : Cluster

    Returns
    -------
    numpy.ndarray of float
        Compute + communication + overhead of each update, in seconds.

    Examples
    --------
    >>> cluster = Cluster(grad_time=1e-3, grads_per_worker=64, overhead=0.0)
    >>> update_seconds([64, 640], n_params=1_000_000, cluster=cluster).round(4)
    array([0.0706, 0.1282])
    """
    parts = _parts(_simhistory._sizes(batch_sizes, "batch sizes"), n_params, cluster)
    return parts["compute"] + parts["communication"] + parts["overhead"]


def batch_sizes(history, n_train=None):
    """Batch size of every model update a fit recorded, in order.

    Parameters
    ----------
    history : history, table or list
        Anything :func:`simulate` takes for one schedule.
    n_train : int or None
        Training examples, for a per-epoch table without update counts.

    Returns
    -------
    list of int

    Examples
    --------
    >>> history = [{"batches": [{"batch_size": 32}, {"batch_size": 32}]},
    ...            {"batches": [{"batch_size": 64}, {"valid_loss": 0.5}]}]
    >>> batch_sizes(history)
    [32, 32, 64]
    """
    return _simhistory.read(history, n_train).sizes.tolist()


def simulate(histories, n_params, cluster, n_train=None, updates=None):
    """Simulated wall-clock time of recorded fits on one cluster.

    Parameters
    ----------
    histories : dict
        Schedule name -> what its fit did, in any of these shapes:

        - a dask-adadamp or skorch ``History``, a list of its epoch dicts,
          or the fitted estimator: its updates and epochs as recorded;
        - a table, ``pandas.DataFrame`` or the path of a CSV file, with a
          batch-size column (``partial_fit__batch_size``, ``batch_size_``,
          ``batch_size`` or ``train_batch_size``): one row per update (an
          ``epoch`` column that repeats counts the epochs), or one row per
          epoch, with its updates from a cumulative or per-epoch
          ``n_updates``/``model_updates`` column (and its examples from
          ``n_examples``/``n_data``), or from ``n_train``;
        - a list or array of per-update batch sizes (integral floats such as
          128.0 are taken); with ``n_train``, an epoch ends once it has seen
          ``n_train`` examples. A list that looks like one size per epoch
          warns.
    n_params : int
        Parameters of the model.
    cluster : Cluster
    n_train : int or None, default=None
        Training examples: the epochs of a list, the updates of a per-epoch
        table without counts.
    updates : {None, "cumulative", "per_epoch"}, default=None
        How a table's update counts are kept; None: cumulative when they
        rise every epoch.

    Returns
    -------
    pandas.DataFrame
        One row per schedule (index ``schedule``): ``model_updates``,
        ``epochs``, ``examples``, ``max_workers`` (the most workers one
        update used), ``updates_capped`` (updates that wanted more than
        ``max_workers``), ``compute_minutes``, ``communication_minutes``,
        ``overhead_minutes`` and ``minutes``, their sum; ``worker_minutes``,
        the workers held, integrated over the fit (what a cluster that
        follows the batch bills).

    Examples
    --------
    >>> cluster = Cluster(grad_time=1e-4, grads_per_worker=64, max_workers=4)
    >>> simulate({"SGD": [64] * 100, "large": [256] * 25}, n_params=10_000,
    ...          cluster=cluster, n_train=3200)[["model_updates", "max_workers"]]
    ... # doctest: +NORMALIZE_WHITESPACE
              model_updates  max_workers
    schedule
    SGD                 100            1
    large                25            4
    """
    if not isinstance(histories, Mapping) or not histories:
        what = "an empty dict" if isinstance(histories, Mapping) else type(histories).__name__
        raise ValueError(f"histories as {what} is not accepted; pass a non-empty dict "
                         "of schedule name -> history, table or list of batch sizes")
    if n_train is not None:
        check_argument("n_train", n_train, "a positive integer")
    if not isinstance(cluster, Cluster):
        raise TypeError(f"cluster={cluster!r} is not accepted; pass a "
                        "dask_adadamp.simulate.Cluster")
    rows, capped = {}, {}
    for name, run in histories.items():
        try:
            schedule = _simhistory.read(run, n_train, updates)
            parts = _parts(schedule.sizes, n_params, cluster)
        except ValueError as error:
            raise ValueError(f"histories[{name!r}]: {error}") from None
        _check_recorded_workers(name, schedule, cluster)
        sizes, workers = schedule.sizes, parts["workers"]
        seconds = parts["compute"] + parts["communication"] + parts["overhead"]
        wanted = -(-sizes // cluster.grads_per_worker)
        if (wanted > workers).any():
            capped[name] = (int((wanted > workers).sum()), len(sizes), int(wanted.max()))
        rows[name] = {
            "model_updates": len(sizes), "epochs": schedule.epochs,
            "examples": int(sizes.sum()), "max_workers": int(workers.max()),
            "updates_capped": int((wanted > workers).sum()),
            "compute_minutes": parts["compute"].sum() / 60,
            "communication_minutes": parts["communication"].sum() / 60,
            "overhead_minutes": parts["overhead"].sum() / 60,
            "minutes": seconds.sum() / 60,
            "worker_minutes": float(workers @ seconds) / 60}
    if capped:
        said = "; ".join(f"{name!r}: {n:,} of {total:,} updates wanted up to {most}"
                         for name, (n, total, most) in capped.items())
        warnings.warn(f"max_workers={cluster.max_workers} binds ({said}), so those "
                      "updates ran on fewer workers than their batch asks for (column "
                      "updates_capped); pass max_workers=None for a cluster that "
                      "follows the batch", UserWarning, stacklevel=2)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "schedule"
    return table


def _check_recorded_workers(name, schedule, cluster):
    """A table that recorded each epoch's workers (adadamp's ``n_workers``)
    should agree with ``ceil(B / grads_per_worker)``; else the cluster's
    ``grads_per_worker`` is not the fit's."""
    if schedule.workers is None:
        return
    recorded = np.asarray(schedule.workers, dtype=float)
    wanted = -(-schedule.sizes // cluster.grads_per_worker)
    off = np.flatnonzero(np.isfinite(recorded) & (recorded != wanted))
    if off.size:
        i = off[0]
        implied = schedule.sizes[i] / recorded[i] if recorded[i] else float("nan")
        warnings.warn(
            f"histories[{name!r}]: its n_workers column records {recorded[i]:g} workers "
            f"at batch {schedule.sizes[i]}, where grads_per_worker="
            f"{cluster.grads_per_worker} gives {wanted[i]} ({off.size:,} updates "
            f"differ); the fit's grads_per_worker was about {implied:g}",
            UserWarning, stacklevel=3)


def _parts(sizes, n_params, cluster):
    """Workers, and compute, communication and overhead seconds of each
    update (one line of docs/simulate.md each)."""
    check_argument("n_params", n_params, "a positive integer")
    if not isinstance(cluster, Cluster):
        raise TypeError(f"cluster={cluster!r} is not accepted; pass a "
                        "dask_adadamp.simulate.Cluster")
    sizes = np.asarray(sizes, dtype=np.int64)
    chunks = _ceil_div(sizes, cluster.grads_per_worker)
    workers = (chunks if cluster.max_workers is None
               else np.minimum(chunks, cluster.max_workers))
    running = workers if cluster.concurrency is None else np.minimum(workers,
                                                                     cluster.concurrency)
    rounds = _ceil_div(workers, running)
    reduction = cluster.reduction
    if reduction is not None and reduction.startswith("adadamp"):
        # One call per worker carries its chunks; the cores compute
        # ceil(C / c) chunks each, the transfers are paid once.
        examples = np.minimum(sizes, cluster.grads_per_worker * _ceil_div(chunks, running))
        compute = rounds * cluster.task_cost + cluster.grad_time * examples
        communication = _transfer(reduction, workers, chunks, n_params, cluster)
    else:
        # Every round of tasks pays a task's cost, compute and transfers.
        compute = rounds * (cluster.task_cost
                            + cluster.grad_time * _ceil_div(sizes, workers))
        communication = rounds * _transfer(reduction, workers, chunks, n_params, cluster)
    overhead = cluster.overhead + cluster.overhead_per_worker * workers
    return {"workers": workers, "compute": compute, "communication": communication,
            "overhead": overhead}


def _transfer(reduction, workers, chunks, n_params, cluster):
    """Seconds to send the weights and bring the gradients back, for ``P``
    workers and ``C`` chunks; ``S / W`` is one copy over one link."""
    one = BYTES_PER_PARAM * n_params / cluster.bandwidth
    latency, p = cluster.latency, workers.astype(float)
    levels = np.ceil(np.log2(p))  # a binary tree over P workers
    if reduction == "adadamp":
        via_tree = chunks > DIRECT_CHUNKS_PER_WORKER * workers
        return np.where(via_tree, _transfer("adadamp-tree", workers, chunks, n_params, cluster),
                        _transfer("adadamp-direct", workers, chunks, n_params, cluster))
    if reduction == "centralized":  # P copies out, P sums back, one link
        return 2 * (latency + p * one)
    if reduction == "allreduce":  # a ring: reduce-scatter, then all-gather
        return 2 * (p - 1) * latency + 2 * (p - 1) / p * one
    if reduction == "tree":  # weights down a binary tree, gradients up it
        return 2 * levels * (latency + one)
    if reduction == "adadamp-direct":  # P copies out, one gradient per chunk back
        return 2 * latency + (p + chunks) * one
    if reduction == "adadamp-tree":  # one copy to the first worker, a tree, one sum back
        return 2 * (1 + levels) * (latency + one)
    return np.zeros(len(workers))


def _ceil_div(a, b):
    return -(-a // b)

