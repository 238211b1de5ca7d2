"""A :class:`~dask_adadamp.simulate.Cluster` measured from a fit's history.

A dask-adadamp fit records, for every update (``history[epoch]["batches"]``),
its ``batch_size``, the workers it used (``n_workers``), the slowest
worker's ``compute_ms``, the rest of its calls' time ``comm_ms``, the
weights it sent (``bytes_out``), whether it went through the tree
(``tree``), and its wall-clock time since the previous update ended
(``worker_s / workers_present``). Each term of the cluster model is fitted
to the means of the updates that share its inputs (weighted by their
counts), each group's slowest 5% left out (a worker's first call, a stall):

- compute ``task_cost + grad_time * examples`` of the busiest worker;
- transfers ``latency * hops + (S / bandwidth) * copies`` of the path each
  update took (``S``: the weights' bytes, from ``bytes_out``);
- what is left of the wall-clock time, ``overhead + overhead_per_worker * P``.
"""
import math

import numpy as np

from ._history import epochs as history_epochs, update_rows

NEEDS = ("batch_size", "n_workers", "compute_ms", "comm_ms", "bytes_out", "tree",
         "worker_s", "workers_present")
# Below this many bytes per second a fitted bandwidth is noise around zero
# transfer time (a loopback's copies of a small model).
_FASTEST = 1e13


def calibrate(history, grads_per_worker):
    """Cluster fields measured from ``history``'s updates.

    >>> rows = [{"batch_size": b, "n_workers": p, "compute_ms": 1 + 0.1 * b / p,
    ...          "comm_ms": 1.0, "bytes_out": 400 * p, "tree": False,
    ...          "worker_s": p * (0.005 + 0.001 * p + (2 + 0.1 * b / p) / 1e3),
    ...          "workers_present": p} for b, p in [(10, 1), (20, 2), (40, 2)]]
    >>> fields = calibrate([{"batches": rows}], grads_per_worker=10)
    >>> {k: round(v * 1e3, 3) for k, v in fields.items() if k != "bandwidth"}
    {'grad_time': 0.1, 'task_cost': 1.0, 'latency': 0.5, 'overhead': 5.0, 'overhead_per_worker': 1.0}
    """
    # NEEDS has batch_size: the rows of a dask-adadamp fit's updates.
    rows = [row for row in update_rows(history_epochs(history))
            if all(row.get(key) is not None for key in NEEDS)]
    if not rows:
        raise ValueError(
            "Cluster.from_history needs the history of a dask-adadamp fit: no update "
            f"records all of {NEEDS} (the net's update_log callback writes them)")
    B = np.array([r["batch_size"] for r in rows], dtype=np.int64)
    P = np.array([max(1, r["n_workers"]) for r in rows], dtype=np.int64)
    tree = np.array([bool(r["tree"]) for r in rows])
    compute = np.array([r["compute_ms"] for r in rows]) / 1e3
    comm = np.array([r["comm_ms"] for r in rows]) / 1e3
    wall = np.array([r["worker_s"] / max(1, r["workers_present"]) for r in rows])
    weights_bytes = float(np.median([r["bytes_out"] / (1 if r["tree"] else max(1, r["n_workers"]))
                                     for r in rows]))

    chunks = -(-B // grads_per_worker)
    examples = np.minimum(B, grads_per_worker * -(-chunks // P))
    task_cost, grad_time = _line(examples, compute, examples)
    if grad_time <= 0:  # no spread in examples to fit a slope to
        task_cost, grad_time = 0.0, float(np.median(compute / examples))

    levels = np.ceil(np.log2(P))
    hops = np.where(tree, 2 * (1 + levels), 2.0)
    copies = np.where(tree, 2 * (1 + levels), P + chunks)
    latency, per_copy = _nonnegative(np.column_stack([hops, copies]), comm,
                                     np.column_stack([hops, copies, tree]))
    per_copy = max(per_copy, weights_bytes / _FASTEST)

    overhead, per_worker = _line(P.astype(float), wall - compute - comm, P)
    if per_worker < 0 or overhead < 0:
        overhead, per_worker = max(0.0, float(np.median(wall - compute - comm))), 0.0
    return {"grad_time": grad_time, "task_cost": max(task_cost, 0.0),
            "latency": latency, "bandwidth": weights_bytes / per_copy,
            "overhead": overhead, "overhead_per_worker": per_worker}


def _groups(keys, y):
    """The rows of ``keys`` (one per distinct key), each group's mean of
    ``y`` without its slowest 5% (a worker's first call, a stall), and its
    size."""
    keys = np.asarray(keys).reshape(len(y), -1)
    unique, inverse, counts = np.unique(keys, axis=0, return_inverse=True,
                                        return_counts=True)
    means = np.array([_trimmed_mean(y[inverse.ravel() == g]) for g in range(len(unique))])
    return unique, means, counts


def _trimmed_mean(values):
    return float(np.mean(np.sort(values)[:max(1, math.ceil(0.95 * len(values)))]))


def _line(x, y, keys):
    """Intercept and slope of ``y`` against ``x``, fitted to the means of
    the groups of equal ``keys``, weighted by their sizes; with one group,
    a line through the origin when ``x`` is the key, else the mean."""
    _, means, counts = _groups(keys, y)
    _, xs, _ = _groups(keys, x)
    if len(xs) == 1:
        return float(means[0]), 0.0
    w = np.sqrt(counts)
    A = np.column_stack([np.ones_like(xs), xs]) * w[:, None]
    (a, b), *_ = np.linalg.lstsq(A, means * w, rcond=None)
    if a < 0:  # through the origin instead
        return 0.0, float((xs * means * counts).sum() / (xs * xs * counts).sum())
    return float(a), float(b)


def _nonnegative(features, y, keys):
    """Least squares of ``y`` on the columns of ``features`` with
    coefficients >= 0, on group means (two columns: the best of both and
    each alone)."""
    unique, means, counts = _groups(keys, y)
    X = unique[:, :features.shape[1]].astype(float)
    w = np.sqrt(counts)
    best, best_err = (0.0, 0.0), math.inf
    for cols in ([0, 1], [0], [1]):
        coef, *_ = np.linalg.lstsq(X[:, cols] * w[:, None], means * w, rcond=None)
        if (coef < 0).any():
            continue
        full = np.zeros(2)
        full[cols] = coef
        err = float((((X @ full) - means) ** 2 * counts).sum())
        if err < best_err - 1e-18:
            best, best_err = (float(full[0]), float(full[1])), err
    return best
