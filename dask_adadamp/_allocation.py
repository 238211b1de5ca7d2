"""How many workers, and how early: the rules :class:`._scaler.Scaler` applies.

- :func:`future_sizes`: a passive schedule's next batch sizes, exactly as
  the fit will run them (replayed, never asked).
- :func:`projected_size`: an adaptive schedule's size one lead time ahead,
  from the trend of its recent sizes.
- :func:`scale_lead`, :func:`lead_updates`: the lead time (dask config
  ``adadamp.scale-lead``) and the updates it spans.
- :class:`Goodput`: the worker count that makes an update fastest by the
  fit's own measurements (dask config ``adadamp.allocation: goodput``).
"""
import math

import dask
import numpy as np
from dask.utils import parse_timedelta

#: ``adadamp.scale-lead: auto`` assumes this many seconds until the fit has
#: seen a worker arrive (a LocalCluster takes ~1 s, a job queue 30 s to
#: minutes). Too short, the first rise trains short of workers (10 s was,
#: on a cluster whose workers took 12-20 s: benchmarks/results/elastic.md);
#: too long, the first fit on a client holds workers early, once.
START_LEAD_S = 30.0
#: Lead time x this, plus one update: the workers should be there, and have
#: their shards, before the update that needs them.
MARGIN = 1.25
#: Updates assumed per second before the fit has measured one.
START_SECONDS_PER_UPDATE = 0.05
#: Longest lookahead, in updates (bounds the replay's memory: one small
#: tuple per update; its maximum is taken over runs of equal sizes).
MAX_HORIZON = 200_000
#: A lower target must hold for this many updates (and the lead time)
#: before the cluster is made smaller.
HOLD_UPDATES = 5
#: Updates whose sizes an adaptive schedule's projection reads.
TREND_UPDATES = 20
#: A worker is added only if the modelled update gets this much faster.
GAIN = 0.02


def scale_lead():
    """The dask config ``adadamp.scale-lead``: (seconds, learned).

    ``"auto"`` (the default): start from ``START_LEAD_S`` and learn, within
    each fit, the longest time from a scale-up request to the arrival of
    the workers asked (while a request waits, the time waited so far).
    A duration (``30``, ``"2 minutes"``): that lead, fixed. ``0``: no
    lookahead (ask when the batch has grown: reactive).

    >>> scale_lead()
    (30.0, True)
    >>> with dask.config.set({"adadamp.scale-lead": "1 minute"}):
    ...     scale_lead()
    (60.0, False)
    """
    value = dask.config.get("adadamp.scale-lead")
    if value == "auto":
        return START_LEAD_S, True
    try:
        seconds = float(parse_timedelta(value, "seconds"))
    except (TypeError, ValueError, KeyError):
        seconds = -1.0
    if not seconds >= 0:
        raise ValueError(f"dask config 'adadamp.scale-lead'={value!r} is not accepted; "
                         "give 'auto', or a duration such as 30 or '2 minutes' (0: "
                         "ask for workers only when the batch needs them)")
    return seconds, False


def allocation():
    """The dask config ``adadamp.allocation``: ``"batch"`` (the default) or
    ``"goodput"``.

    >>> allocation()
    'batch'
    """
    value = dask.config.get("adadamp.allocation")
    if value not in ("batch", "goodput"):
        raise ValueError(f"dask config 'adadamp.allocation'={value!r} is not accepted; "
                         "give 'batch' (ceil(B / grads_per_worker) workers) or "
                         "'goodput' (the workers that make an update fastest)")
    return value


def lead_updates(lead_s, seconds_per_update):
    """Updates within ``lead_s`` (with ``MARGIN``), at most ``MAX_HORIZON``.

    >>> lead_updates(3.0, 0.1), lead_updates(0.0, 0.1)
    (39, 0)
    """
    if lead_s <= 0:
        return 0
    seconds = seconds_per_update or START_SECONDS_PER_UPDATE
    return min(MAX_HORIZON, math.ceil(lead_s * MARGIN / seconds) + 1)


def future_sizes(damper, updates, epochs, rows_left, n_train, max_batch_size=None,
                 last_epoch=None):
    """A passive schedule's updates from now on, as the fit will run them.

    Replays what the fit does before each update (the schedule's
    :meth:`~BaseDamper.ask`, its ``dwell`` included, the cap at the data and
    at ``max_batch_size``) and what the epoch's sampler takes (no more rows
    than are left in the epoch), on copies of the schedule's state: the
    schedule is not changed.

    Parameters
    ----------
    damper : BaseDamper
        A schedule whose :meth:`batch_size` reads no loss.
    updates, epochs, rows_left, n_train : int
        Before the first update yielded: updates and epochs done, rows left
        in the epoch, rows in the training set.
    max_batch_size, last_epoch : int or None
        ``last_epoch``: ``epochs`` of the fit's last epoch; None: endless.

    Yields
    ------
    ((updates, epochs, rows_left), size)
        Each update's state before it and its batch size.

    Examples
    --------
    >>> from itertools import islice
    >>> from dask_adadamp.dampers import GeoDamp
    >>> sizes = future_sizes(GeoDamp(initial=4, factor=2, delay=1), 0, 0, 10, 10)
    >>> [size for _, size in islice(sizes, 6)]
    [4, 4, 2, 8, 2, 10]
    """
    dwell = getattr(damper, "dwell", 1)
    requested = getattr(damper, "requested_", None)
    asked_at = getattr(damper, "asked_at_", None)
    from ._damper_base import Progress
    while last_epoch is None or epochs <= last_epoch:
        # BaseDamper.ask (a state from a later update than this: stale)
        if asked_at is None or not 0 <= updates - asked_at < dwell:
            size = damper.batch_size(Progress(updates=updates, epochs=epochs,
                                              n_train=n_train))
            requested, asked_at = math.ceil(min(max(size, 1), 2**62)), updates
        size = min(requested, n_train)  # Fit.batch_size
        if max_batch_size is not None and requested > max_batch_size:
            size = max_batch_size
        rows = min(size, rows_left)  # EpochSampler.take
        yield (updates, epochs, rows_left), rows
        updates, rows_left = updates + 1, rows_left - rows
        if rows_left <= 0:
            epochs, rows_left = epochs + 1, n_train


def projected_size(sizes, horizon, cap=math.inf):
    """An adaptive schedule's batch ``horizon`` updates ahead.

    The least-squares trend of ``log(size)`` over the last updates
    (``sizes``: their ``(updates, size)``), extended; never below the last
    size (a falling trend projects nothing), never above ``cap``.

    >>> projected_size([(0, 32), (1, 64), (2, 128)], horizon=2)
    512
    >>> projected_size([(0, 64), (1, 32)], horizon=5)
    32
    """
    recent = sizes[-TREND_UPDATES:]
    last = recent[-1][1]
    if len(recent) < 2 or horizon <= 0:
        return min(last, cap)
    x = np.array([u for u, _ in recent], dtype=float)
    y = np.log([max(s, 1) for _, s in recent])
    slope = np.polyfit(x, y, 1)[0] if np.ptp(x) > 0 else 0.0
    growth = math.exp(min(max(slope, 0.0) * horizon, 50.0))
    return int(min(max(last, round(last * growth)), cap))


class Goodput:
    """The worker count that makes an update fastest, from the fit's
    measurements (AdaptDL/Pollux's goodput in spirit).

    An update of ``B`` examples on ``P`` workers is modelled as

    .. math:: T(P) = a_P \\cdot r(B, P) + c \\cdot P + f

    ``r(B, P) = min(B, ceil(ceil(B / g) / P) g)``: the rows of the busiest
    worker (chunks of at most ``g = grads_per_worker`` rows), ``a_P``: its
    measured compute seconds per row when ``P`` workers were used (taken
    from the nearest count measured below, else above: more workers than
    cores show up there), ``c``: communication seconds per worker, the slope
    of the measured communication over the worker counts used (with one
    count measured: half its communication per worker, a prior), ``f``:
    the rest (it does not change the choice). The chosen ``P`` is the
    smallest within ``[low, high]`` whose ``T`` is within ``GAIN`` of the
    best: a worker is added only where the update gets faster. Before any
    measurement it is ``high`` (the batch rule).

    Examples
    --------
    Communication that grows 20 ms per worker against 5 ms of compute:
    one worker.

    >>> goodput = Goodput(grads_per_worker=32)
    >>> for p in (1, 2):
    ...     goodput.add({"batch_size": 64, "n_workers": p,
    ...                  "compute_ms": 5.0 / p, "comm_ms": 20.0 * p})
    >>> goodput.choose(64, low=1, high=2)
    1
    """

    def __init__(self, grads_per_worker, weight=0.8):
        self.g, self.weight = grads_per_worker, weight
        self.per_row, self.comm = {}, {}  # workers used -> smoothed seconds

    def rows(self, size, workers):
        chunks = math.ceil(size / self.g)
        return min(size, math.ceil(chunks / workers) * self.g)

    def add(self, measured):
        """Take in one update's record (``batch_size``, ``n_workers``,
        ``compute_ms``, ``comm_ms``)."""
        p, size = measured.get("n_workers"), measured.get("batch_size")
        compute, comm = measured.get("compute_ms"), measured.get("comm_ms")
        if not p or not size or compute is None or comm is None:
            return
        for table, value in ((self.per_row, compute / 1e3 / self.rows(size, p)),
                             (self.comm, comm / 1e3)):
            old = table.get(p)
            table[p] = value if old is None else self.weight * old + (1 - self.weight) * value

    def per_worker(self):
        """``c``, communication seconds per worker."""
        counts = sorted(self.comm)
        if len(counts) == 1:
            return self.comm[counts[0]] / (2 * counts[0])
        slope = np.polyfit(counts, [self.comm[p] for p in counts], 1)[0]
        return max(float(slope), 0.0)

    def seconds(self, size, workers):
        """Modelled ``T(P) - f`` for ``size`` rows on ``workers``."""
        below = [p for p in self.per_row if p <= workers]
        near = max(below) if below else min(self.per_row)
        return self.per_row[near] * self.rows(size, workers) + self.per_worker() * workers

    def choose(self, size, low, high):
        """The fewest workers in ``[low, high]`` within ``GAIN`` of the fastest."""
        if not self.per_row or high <= low:
            return high
        times = {p: self.seconds(size, p) for p in range(low, int(high) + 1)}
        best = min(times.values())
        return min(p for p, t in times.items() if t <= best * (1 + GAIN))
