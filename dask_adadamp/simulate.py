"""Simulated wall-clock time of a recorded fit on a cluster you describe.

A fit's history says how many examples every model update used. With the
time model of Holt & Sievert, "Training machine learning models faster
with Dask" (SciPy 2021), this module turns that list of batch sizes into
the minutes the same updates would take on a cluster of up to
``max_workers`` workers, without that cluster: how much a growing batch
saves in wall-clock time when larger batches are spread over more workers.

The time model, for update ``k`` of ``B_k`` examples:

- Workers: ``P_k = min(max_workers, ceil(B_k / grads_per_worker))``.
- Compute: ``grad_time * ceil(B_k / P_k)``; the workers compute their
  shares at once, and ``grad_time`` is one example's gradient on one worker.
- Communication, with ``S = 4 * n_params`` bytes (float32) of weights or
  gradients, ``L`` the network latency and ``W`` its bandwidth:

  - ``"centralized"`` (this project: the client sends the weights to each
    of the ``P_k`` workers and receives ``P_k`` gradient sums, all through
    its one link): ``2 * (L + P_k * S / W)``.
  - ``"allreduce"`` (a ring all-reduce, as in PyTorch DDP or Horovod):
    ``2 * (P_k - 1) * L + 2 * (P_k - 1) / P_k * S / W``, 0 for one worker.

- A fixed ``overhead`` per update (this project's direct calls to the
  workers beyond their compute and bytes, and the client's optimizer step):
  10 ms by default, a round figure. Measure your own as an update's time
  minus its ``compute_ms`` (the history has both): section 1 of
  ``benchmarks/results/results.md`` (``benchmarks/update_cost.py``) gives
  16 to 27 ms for the 270k model on 2 workers of the 2-vCPU
  development machine, whose speed varies between runs.

An update takes compute + communication + overhead; a fit, the sum over its
updates. See ``docs/simulate.md`` for what the model leaves out.

Examples
--------
>>> from dask_adadamp.simulate import Cluster, simulate
>>> cluster = Cluster(grad_time=1e-3, grads_per_worker=64, max_workers=8)
>>> runs = {"SGD": [64] * 2000, "growing": [64] * 1000 + [512] * 125}
>>> table = simulate(runs, n_params=1_000_000, cluster=cluster, n_train=64_000)
>>> table[["model_updates", "max_workers", "minutes", "worker_minutes"]].round(2)
... # doctest: +NORMALIZE_WHITESPACE
          model_updates  max_workers  minutes  worker_minutes
schedule
SGD                2000            1     2.69            2.69
growing            1125            8     1.60            3.43
"""
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from ._history import epochs as history_epochs, update_rows
from ._validation import KINDS, check_argument, check_fields

REDUCTIONS = ("centralized", "allreduce")
BYTES_PER_PARAM = 4  # float32 weights and gradients


@dataclass(frozen=True)
class Cluster:
    """The cluster a history is simulated on.

    Parameters
    ----------
    grad_time : float
        Seconds one worker takes for one example's gradient (forward and
        backward), measured on one worker.
    grads_per_worker : int
        Most examples one worker computes per update, as the estimators'
        ``grads_per_worker``: an update of ``B`` examples uses
        ``ceil(B / grads_per_worker)`` workers, up to ``max_workers``.
    max_workers : int, default=32
        Workers in the cluster.
    latency : float, default=1e-4
        Seconds for a message to cross the network (100 us: TCP within a
        data center).
    bandwidth : float, default=1.25e9
        Bytes per second of one link (1.25e9: 10 Gbit/s Ethernet).
    overhead : float, default=0.010
        Seconds every update costs whatever its size: this project's calls
        to the workers (beyond compute and bytes) and optimizer step. 10 ms
        is a round figure; measure yours as an update's time minus its
        ``compute_ms`` (both in the fit's history).
    reduction : {"centralized", "allreduce"}, default="centralized"
        How gradients are summed: through the client, as this project
        does, or by a ring all-reduce among the workers (DDP, Horovod).

    Examples
    --------
    >>> Cluster(grad_time=1e-3, grads_per_worker=64, reduction="allreduce")
    ... # doctest: +NORMALIZE_WHITESPACE
    Cluster(grad_time=0.001, grads_per_worker=64, max_workers=32,
            latency=0.0001, bandwidth=1250000000.0, overhead=0.01,
            reduction='allreduce')
    """

    grad_time: float
    grads_per_worker: int
    max_workers: int = 32
    latency: float = 1e-4
    bandwidth: float = 1.25e9
    overhead: float = 0.010
    reduction: str = "centralized"

    _checks: ClassVar[dict] = {"grad_time": "a positive number",
                               "grads_per_worker": "a positive integer",
                               "max_workers": "a positive integer",
                               "latency": "a number >= 0",
                               "bandwidth": "a positive number",
                               "overhead": "a number >= 0"}

    def __post_init__(self):
        check_fields(self, self._checks)
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"Cluster(reduction={self.reduction!r}) is not accepted; "
                             f"reduction must be one of {REDUCTIONS}")


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
    _, compute, communication = _parts(batch_sizes, n_params, cluster)
    return compute + communication + cluster.overhead


def batch_sizes(history):
    """Batch size of every model update a fit recorded, in order.

    Parameters
    ----------
    history : skorch History, list of dict, or a fitted estimator
        The ``history`` of a :class:`~dask_adadamp.DaskClassifier` or
        :class:`~dask_adadamp.DaskRegressor` (or the estimator itself).
        Every model update is an entry of ``history[epoch]["batches"]``
        with the key ``"batch_size"``; entries without it (validation
        batches) are not updates.

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
    sizes = [int(row["batch_size"]) for row in update_rows(history_epochs(history))]
    if not sizes:
        raise ValueError("the history has no model updates: no entry of "
                         "history[epoch]['batches'] has the key 'batch_size', which "
                         "DaskClassifier and DaskRegressor record for every update")
    return sizes


def simulate(histories, n_params, cluster, n_train=None):
    """Simulated wall-clock time of recorded fits on one cluster.

    Parameters
    ----------
    histories : dict
        Schedule name -> what its fit did: a history as
        :func:`batch_sizes` takes it, a fitted estimator, or the list of
        its batch sizes.
    n_params : int
        Parameters of the model.
    cluster : Cluster
        The cluster, with its reduction, to simulate.
    n_train : int or None, default=None
        Training examples, for the epochs of lists of batch sizes (a
        history counts its own epochs).

    Returns
    -------
    pandas.DataFrame
        One row per schedule (index ``schedule``), with columns
        ``model_updates``, ``epochs``, ``examples``, ``max_workers`` (the
        most workers one update used), ``compute_minutes``,
        ``communication_minutes``, ``overhead_minutes`` and ``minutes``,
        their sum; and ``worker_minutes``, the workers the cluster held,
        integrated over the fit (an update of ``P_k`` workers holds them
        for its whole time: what a cluster that follows the batch bills).

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
                         "of schedule name -> history or list of batch sizes")
    if n_train is not None:
        check_argument("n_train", n_train, "a positive integer")
    rows = {}
    for name, run in histories.items():
        try:
            sizes, epochs = _sizes_and_epochs(run, n_train)
            workers, compute, communication = _parts(sizes, n_params, cluster)
        except ValueError as error:
            raise ValueError(f"histories[{name!r}]: {error}") from None
        overhead = cluster.overhead * len(sizes)
        seconds = compute + communication + cluster.overhead
        rows[name] = {
            "model_updates": len(sizes),
            "epochs": epochs,
            "examples": int(sum(sizes)),
            "max_workers": int(workers.max()),
            "compute_minutes": compute.sum() / 60,
            "communication_minutes": communication.sum() / 60,
            "overhead_minutes": overhead / 60,
            "minutes": (compute.sum() + communication.sum() + overhead) / 60,
            "worker_minutes": float(workers @ seconds) / 60,
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "schedule"
    return table


def _sizes_and_epochs(run, n_train):
    """Batch sizes and epochs of one fit: a history or a list of sizes."""
    if not hasattr(run, "history"):
        if not isinstance(run, Iterable):
            raise ValueError(f"a {type(run).__name__} is not accepted; pass a history, "
                             "a fitted estimator or a list of batch sizes")
        items = list(run)
        if not items:
            raise ValueError("an empty history or list of batch sizes is not "
                             "accepted; a fit needs at least one model update")
        if not any(isinstance(item, Mapping) for item in items):
            sizes = list(_check_sizes(items))
            return sizes, (sum(sizes) / n_train if n_train else float("nan"))
        run = items
    return batch_sizes(run), len(history_epochs(run))


def _parts(batch_sizes, n_params, cluster):
    """Workers, compute seconds and communication seconds of each update."""
    sizes = _check_sizes(batch_sizes)
    check_argument("n_params", n_params, "a positive integer")
    if not isinstance(cluster, Cluster):
        raise TypeError(f"cluster={cluster!r} is not accepted; pass a "
                        "dask_adadamp.simulate.Cluster")
    workers = np.clip(_ceil_div(sizes, cluster.grads_per_worker), 1, cluster.max_workers)
    compute = cluster.grad_time * _ceil_div(sizes, workers)
    transfer = BYTES_PER_PARAM * n_params / cluster.bandwidth
    if cluster.reduction == "centralized":
        # Weights out to P workers and P sums back, all through the client's link.
        communication = 2 * (cluster.latency + workers * transfer)
    else:
        # A ring: reduce-scatter then all-gather, P - 1 steps each, every
        # step moving 1 / P of the gradient over every link at once.
        communication = (2 * (workers - 1) * cluster.latency
                         + 2 * (workers - 1) / workers * transfer)
    return workers, compute, communication


def _ceil_div(a, b):
    return -(-a // b)


def _check_sizes(batch_sizes):
    sizes = list(batch_sizes)
    if not sizes:
        raise ValueError("batch_sizes=[] is not accepted; a fit needs at least "
                         "one model update")
    bad = [b for b in sizes if not KINDS["a positive integer"](b)]
    if bad:
        raise ValueError(f"batch sizes {bad[:5]!r} are not accepted; every batch "
                         "size must be a positive integer")
    return np.asarray(sizes, dtype=np.int64)
