"""The cluster follows the batch, ahead of time: :class:`Scaler`.

Workers take time to come (about a second for a ``LocalCluster``, tens of
seconds to minutes on dask-jobqueue or dask-kubernetes), so a fit that asks
for them when its batch has grown trains short of them. Before every update
the scaler asks for the workers the batch will need one *lead time* ahead:

- **Lookahead.** A schedule that reads neither the loss nor the gradient
  (GeoDamp, GeoDampLR, PadaDamp, Constant, GradientDescent: ``needs_finite``
  False) knows its future sizes: they are evaluated forward exactly,
  epoch by epoch, as the fit will cut them (:func:`future_sizes`). An
  adaptive schedule's sizes are projected from this fit's recent ones
  (:func:`projected_size`), never below the current size.
- **Lead time.** Learned within the fit, from each scale-up request to the
  arrival of the workers asked (the scheduler's events, :mod:`._membership`);
  dask config ``adadamp.scale-lead`` (:func:`scale_lead`); a later fit on
  the same client starts from what an earlier one learned. It is turned
  into updates with the fit's measured seconds per update.
- **Stable decisions.** Up at once; down only after the lower target held
  for the lead time and at least ``HOLD_UPDATES`` updates; workers are
  retired (their data moved) before the cluster closes them; never outside
  ``[min_workers, max_workers]``.
- **Allocation.** dask config ``adadamp.allocation``: ``"batch"``
  (``ceil(B / grads_per_worker)`` workers) or ``"goodput"`` (:class:`Goodput`).

The allocation rules live in :mod:`._allocation`.
"""
import logging
import math
import time
import warnings
import weakref
from collections import deque

from . import _membership
from ._allocation import (HOLD_UPDATES, Goodput, allocation, future_sizes,
                          lead_updates, projected_size, scale_lead)
from .exceptions import NoClusterManagerWarning

logger = logging.getLogger(__name__)

#: Worker (Nanny) states of a SpecCluster entry whose process is gone for
#: good: retired, closed, failed. A nanny restarting its worker stays running.
GONE = {"closing", "closed", "closing_gracefully", "failed", "error"}
#: The lead time each client's fits learned (``adadamp.scale-lead: auto``):
#: the next fit on the client starts from it rather than from the guess.
_LEARNED = weakref.WeakKeyDictionary()
#: While a scale-up waits, the scheduler is asked for its workers at most
#: this often (seconds), in case an event was missed.
POLL_S = 1.0


class Scaler:
    """Hold a cluster at the workers the batch needs, asked one lead time early.

    Parameters
    ----------
    client : distributed.Client
    grads_per_worker : int
    min_workers, max_workers : int or None
    damper : BaseDamper or None
        The fit's schedule: its future sizes are read (never asked, which
        would change its state) when it is passive, projected otherwise.
    n_train : int or None
        Training rows; None: the rows left at the first request (a fit
        starts at an epoch's start).
    max_batch_size : int or None
    last_epoch : int or None
        ``Progress.epochs`` of the fit's last epoch: the lookahead stops
        there (None: it does not stop).

    Notes
    -----
    With a cluster that runs ``cluster.adapt()`` the scaler never calls
    ``scale`` (it would fight the ``Adaptive``, which cannot see the fit's
    work: updates are direct calls, not tasks, so it would shrink the cluster
    to its minimum mid-fit). It raises the Adaptive's ``minimum`` to the
    fit's target instead (within its ``maximum``), and restores it at
    :meth:`close`. Without a cluster manager (``client.cluster`` is None)
    it warns once and the fit trains on the workers there are.

    Examples
    --------
    >>> from distributed import Client, LocalCluster
    >>> from dask_adadamp.dampers import GeoDamp
    >>> cluster = LocalCluster(n_workers=1, processes=False, dashboard_address=':0')
    >>> client = Client(cluster)
    >>> scaler = Scaler(client, grads_per_worker=32, max_workers=2,
    ...                 damper=GeoDamp(initial=32, delay=1), n_train=64)
    >>> scaler.request(32, updates=0, epochs=0, rows_left=64)  # 64 is coming
    True
    >>> scaler.state()["workers_wanted"], scaler.state()["workers_asked"]
    (1, 2)
    >>> scaler.close(); client.close(); cluster.close()
    """

    def __init__(self, client, grads_per_worker, min_workers=None, max_workers=None,
                 damper=None, n_train=None, max_batch_size=None, last_epoch=None):
        self.client, self.grads_per_worker = client, grads_per_worker
        self.low = min_workers or 1
        self.high = max_workers or math.inf
        self.damper, self.n_train = damper, n_train
        self.max_batch_size, self.last_epoch = max_batch_size, last_epoch
        self.lead_s, self.learn = scale_lead()
        if self.learn and client in _LEARNED:
            # What an earlier fit on this client learned of its cluster.
            self.lead_s = _LEARNED[client]
        self.goodput = Goodput(grads_per_worker) if allocation() == "goodput" else None
        self.members = _membership.acquire(client)
        self._version = self.members.version
        self.cluster = getattr(client, "cluster", None)
        self.adaptive = self.wanted = None
        self._pending, self._lags, self._spu, self._sizes = [], [], [], []
        self._all_lags, self._last = [], None
        self._polled = time.monotonic()
        self._future = self._gen = None
        self._passive = damper is not None and not damper.needs_finite
        self._calls, self._low = 0, None  # (since, calls then, highest target)
        self._moved = False
        if self.cluster is None or not hasattr(self.cluster, "scale"):
            warnings.warn(
                "min_workers/max_workers need a cluster manager behind the client "
                "(client.cluster), and this client has none; training on the "
                f"{len(client.nthreads())} workers that exist", NoClusterManagerWarning,
                stacklevel=3)
            self.cluster = self.found = self.asked = None
            return
        adaptive = getattr(self.cluster, "_adaptive", None)
        if getattr(adaptive, "state", None) in ("starting", "running"):
            self.adaptive, self.found = adaptive, adaptive.minimum
            self.asked = max(adaptive.minimum, len(self.members.live))
        else:
            self.found = self.asked = len(self._live_names()) or len(self.members.live)

    # --- before every update ------------------------------------------------

    def request(self, size, updates, epochs, rows_left, seconds_per_update=None,
                measured=None):
        """Ask for the workers this update and the next lead time need.

        Parameters
        ----------
        size : int
            This update's batch size.
        updates, epochs : int
            Model updates and epochs done so far (``Progress``'s).
        rows_left : int
            Rows left in the epoch before this update.
        seconds_per_update : float or None
            The fit's measured time per update (None: the scaler's own
            measurement between requests).
        measured : dict or None
            The previous update's record (``batch_size``, ``n_workers``,
            ``compute_ms``, ``comm_ms``), for the goodput allocation.

        Returns
        -------
        bool
            Whether the cluster was asked for something new.
        """
        now = time.monotonic()
        self._calls += 1
        if self.n_train is None:
            self.n_train = rows_left
        self._time(now, seconds_per_update)
        if measured and self.goodput is not None:
            self.goodput.add(measured)
        self._settle(now)
        self.wanted = self._workers(size)
        self._sizes = (self._sizes + [(updates, size)])[-20:]
        if self.cluster is None:
            return False
        ahead = self._ahead(size, updates, epochs, rows_left, now)
        target = max(self.wanted, self._workers(ahead))
        return self._decide(target, now)

    def _workers(self, size):
        """Workers an update of ``size`` rows gets under the allocation."""
        chunks = math.ceil(size / self.grads_per_worker)
        high = max(self.low, min(self.high, chunks))
        if self.goodput is not None:
            return self.goodput.choose(size, self.low, high)
        return high

    def _ahead(self, size, updates, epochs, rows_left, now):
        """The largest batch within the lead time after this update."""
        horizon = lead_updates(self._lead(now), self._seconds_per_update())
        if not horizon:
            return size
        if self._passive:
            try:
                return self._window_max(size, updates, epochs, rows_left, horizon)
            except Exception:  # a schedule of the user's that cannot be replayed
                logger.info("cannot evaluate %r ahead; projecting its sizes instead",
                            self.damper, exc_info=True)
                self._passive = False
        cap = min(self.n_train or math.inf, self.max_batch_size or math.inf)
        return projected_size(self._sizes, horizon, cap)

    def _window_max(self, size, updates, epochs, rows_left, horizon):
        """The largest size of the next ``horizon`` updates (or ``size``),
        replayed once and kept: each update's state (to check the replay
        runs as the fit does) and runs of equal sizes (whose maximum is cheap
        however long the lead: a schedule's size changes rarely)."""
        state = (updates, epochs, rows_left)
        future, runs = self._future or (deque(), deque())
        while future and future[0][0][0] < updates:
            future.popleft()
        while runs and runs[0][1] < updates:
            runs.popleft()  # [first update, last update, size]
        if not future or future[0][0] != state or future[0][1] != size:
            self._gen = future_sizes(self.damper, updates, epochs, rows_left,
                                     self.n_train, self.max_batch_size, self.last_epoch)
            future, runs = deque(), deque()
        self._future = (future, runs)
        end = updates + horizon
        while not future or future[-1][0][0] < end:
            entry = next(self._gen, None)
            if entry is None:
                break
            future.append(entry)
            k, rows = entry[0][0], entry[1]
            if runs and runs[-1][2] == rows and runs[-1][1] == k - 1:
                runs[-1][1] = k
            else:
                runs.append([k, k, rows])
        if future and future[0][1] != min(size, rows_left):
            # The replay does not run as the fit does (a schedule of the
            # user's with state of its own): project instead of replaying.
            # (An epoch's last update takes the rows left, as the replay.)
            raise ValueError(f"replayed size {future[0][1]}, the fit's "
                             f"{min(size, rows_left)}")
        return max((r[2] for r in runs if r[0] <= end and r[1] > updates), default=size)

    def _decide(self, target, now):
        """Up at once; down once the lower target held (hysteresis)."""
        if target > self.asked:
            self._low = None
            return self._apply(target, now)
        if target == self.asked:
            self._low = None
            if (self.adaptive is None and not self._pending
                    and len(self.members.live) < self.asked and self._gone_names()):
                return self._apply(target, now)  # a lost worker: replace it
            return False
        since, calls, highest = self._low or (now, self._calls, target)
        self._low = (since, calls, max(highest, target))
        if now - since >= self._lead(now) and self._calls - calls >= HOLD_UPDATES:
            # the highest target of the low spell: it held all along
            self._low = None
            return self._apply(max(highest, target), now)
        return False

    def _apply(self, n, now):
        if self.adaptive is not None:
            n = min(n, self.adaptive.maximum)
            if n == self.asked:
                return False
            self.adaptive.minimum = max(self.found, n)
        else:
            self._scale(n)
        if n > len(self.members.live):
            self._pending.append((now, n))
        self._pending = [(t, k) for t, k in self._pending if k <= n]
        self.asked, self._moved = n, True
        return True

    # --- what the cluster did -----------------------------------------------

    def _settle(self, now):
        """Scale-ups whose workers all arrived: their lags."""
        live, left = len(self.members.live), []
        for t, n in self._pending:
            if live >= n:
                came = [a for a, _ in self.members.arrivals if a >= t]
                if came:
                    self._lags.append(max(came) - t)
                    self._all_lags.append(max(came) - t)
                    if self.learn:
                        # The longest lag this fit saw replaces the guess.
                        self.lead_s = max(self._all_lags)
            else:
                left.append((t, n))
        self._pending = left

    def _lead(self, now):
        """Lead time, seconds: learned, or longer while a request waits."""
        waiting = max((now - t for t, _ in self._pending), default=0.0)
        return max(self.lead_s, waiting) if self.learn else self.lead_s

    def _time(self, now, seconds_per_update):
        if seconds_per_update is None and self._last is not None:
            seconds_per_update = now - self._last
        self._last = now
        if seconds_per_update is not None and seconds_per_update > 0:
            self._spu = (self._spu + [seconds_per_update])[-9:]

    def _seconds_per_update(self):
        # The median of the last updates: an epoch's validation or a slow
        # first call do not set the lookahead alone.
        return sorted(self._spu)[len(self._spu) // 2] if self._spu else None

    def arrivals(self):
        """The live workers (sorted) when they changed since the last call,
        else None. From the scheduler's events: all of them, no round trip."""
        now = time.monotonic()
        if self._pending and now - self._polled >= POLL_S:
            # Events can miss a worker that came while the subscription was
            # on its way to the scheduler: while workers are awaited, ask.
            self._polled = now
            self.members.refresh()
        if self.members.version == self._version:
            return None
        self._version = self.members.version
        return sorted(self.members.live)

    def state(self):
        """This update's resource bill.

        Returns
        -------
        dict
            ``workers_wanted`` (what this update's batch needs, clipped, under
            the allocation), ``workers_asked`` (what the cluster was asked
            for, lookahead included; None without a manager),
            ``workers_present`` (live workers) and ``scale_lags_s`` (request
            to arrival of the scale-ups completed since the last call).
        """
        self._settle(time.monotonic())
        lags, self._lags = [round(lag, 3) for lag in self._lags], []
        return {"workers_wanted": self.wanted, "workers_asked": self.asked,
                "workers_present": len(self.members.live), "scale_lags_s": lags}

    # --- the cluster manager -------------------------------------------------

    def _workers_by_name(self):
        """Live worker addresses of each SpecCluster entry (a nanny's
        restarted worker keeps its name under a new address)."""
        info = getattr(self.cluster, "scheduler_info", None) or {}
        live, named = self.members.live, {}
        for addr, worker in dict(info.get("workers", {})).items():
            if addr in live:
                named.setdefault(str(worker.get("name")), []).append(addr)
        out = {}
        for name, spec in self.cluster.worker_spec.items():
            suffixes = spec.get("group", [""]) if isinstance(spec, dict) else [""]
            addrs = [a for s in suffixes for a in named.get(str(name) + s, [])]
            if addrs:
                out[name] = addrs
        return out

    def _live_names(self):
        if getattr(self.cluster, "worker_spec", None) is None:
            return []
        return list(self._workers_by_name())

    def _gone_names(self):
        """Entries whose worker is gone for good (retired, closed, failed)."""
        spec = getattr(self.cluster, "worker_spec", None)
        if spec is None:
            return []
        live = self._workers_by_name()
        workers = getattr(self.cluster, "workers", {})
        return [name for name in spec if name not in live and name in workers
                and getattr(workers[name].status, "name", "") in GONE]

    def _scale(self, n):
        spec = getattr(self.cluster, "worker_spec", None)
        if spec is None or any(isinstance(s, dict) and "group" in s for s in spec.values()):
            # No spec, or several workers per entry (dask-jobqueue's
            # processes): the manager's own scale decides what closes.
            self.cluster.scale(n)
            return
        for name in self._gone_names():  # not live workers: dropped first
            del spec[name]
        live = self._workers_by_name()
        excess = len(spec) - n
        if excess > 0:
            # Entries still starting go first (newest first), then the
            # newest live workers, retired so that their data moves.
            starting = [name for name in reversed(spec) if name not in live][:excess]
            retire = [name for name in reversed(spec) if name in live][:excess - len(starting)]
            if retire:
                self.client.retire_workers(
                    workers=[a for name in retire for a in live[name]], close_workers=False)
            for name in starting + retire:
                del spec[name]
        self.cluster.scale(n)

    def close(self):
        """Give the cluster back at the size it was found, with live workers
        (or the Adaptive its minimum); stop following its membership."""
        try:
            if self.adaptive is not None:
                self.adaptive.minimum = self.found
            elif self.cluster is not None and (self._moved or self._gone_names()):
                self._scale(self.found)
        except Exception:  # never hide the error that ended the fit
            logger.warning("could not scale the cluster back to %s workers",
                           self.found, exc_info=True)
        finally:
            if self.learn and self._all_lags:
                _LEARNED[self.client] = self.lead_s
            _membership.release(self.client)
