"""The client side of the dashboard page: :class:`FitMonitor`.

Runs in the client's process, in the fit's loop. It registers the
scheduler plugin (:class:`~dask_adadamp.dashboard.DashboardPlugin`, once per
client) and sends the fit's rows with ``client.log_event``, buffered, as
messages that :func:`dask_adadamp._messages.check` accepts. Public names are
re-exported by :mod:`dask_adadamp.dashboard`.
"""
import logging
import math
import numbers
import time
import uuid
import warnings
import weakref

from . import _messages as messages
from ._messages import EPOCH_COLUMNS, TOPIC, UPDATE_COLUMNS
from ._plugin import PLUGIN_NAME, DashboardPlugin
from .exceptions import DashboardOffWarning

# The logger the dashboard always had, wherever its code lives.
logger = logging.getLogger("dask_adadamp.dashboard")

# Added by the monitor: "time", seconds since the fit started, and
# "worker_s_total", the worker-seconds of the fit's updates so far.
_RECORD_COLUMNS = tuple(c for c in UPDATE_COLUMNS if c not in ("time", "worker_s_total"))
# Epoch columns the monitor derives from the record's "scale_lags_s" (the
# lags of the epoch's completed scale-ups, a list).
_LAG_COLUMNS = ("scale_ups", "scale_lag_s", "scale_lag_max_s")
FLUSH_INTERVAL = 0.5  # seconds between two sends of buffered update rows

# Registration costs a round trip and its outcome does not change for a
# client, so it is done once per client.
_registered = weakref.WeakKeyDictionary()


def _value(x):
    """``x`` as a msgpack- and JSON-friendly scalar.

    Non-finite floats become None: JSON has no NaN and the plots show a
    gap for None.
    """
    kind = type(x)
    # Fast paths for what a fit sends most, before the general checks.
    if kind is float:
        return x if math.isfinite(x) else None
    if x is None or kind is int or kind is str or kind is bool:
        return x
    if isinstance(x, numbers.Integral):
        return int(x)
    try:
        if not isinstance(x, numbers.Real) and hasattr(x, "item"):
            x = x.item()  # numpy arrays of size one, torch tensors
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    return x if math.isfinite(x) else None


def _number(x):
    """``x`` as a row value: a number or None (the plugin takes no other);
    a bool is 1 or 0."""
    if type(x) is bool:
        return int(x)
    x = _value(x)
    if type(x) is int and not -2**63 <= x < 2**63:
        return float(x)  # msgpack's ints have 64 bits
    return x if type(x) in (int, float) else None


def _lags(lags):
    """The epoch columns of a list of scale-up lags (seconds); ``{}`` when
    there is no list.

    >>> _lags([2.0, 4.0])
    {'scale_ups': 2, 'scale_lag_s': 3.0, 'scale_lag_max_s': 4.0}
    >>> _lags([])
    {'scale_ups': 0, 'scale_lag_s': None, 'scale_lag_max_s': None}
    """
    if lags is None:
        return {}
    try:
        lags = [_number(lag) for lag in list(lags)[:messages.MAX_MESSAGE_ROWS]]
    except TypeError:
        return {}
    lags = [lag for lag in lags if lag is not None]
    return {"scale_ups": len(lags),
            "scale_lag_s": sum(lags) / len(lags) if lags else None,
            "scale_lag_max_s": max(lags, default=None)}


def _clip(text, limit):
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _ensure_plugin(client):
    """Register the plugin on ``client``'s scheduler; whether it worked."""
    try:
        return _registered[client]
    except (KeyError, TypeError):
        pass
    try:
        if getattr(client, "asynchronous", False):
            raise RuntimeError("asynchronous clients are not supported")
        # Idempotent (a class attribute): a scheduler that has the plugin
        # keeps it, with the fits it holds.
        client.register_plugin(DashboardPlugin(), name=PLUGIN_NAME)
        ok = True
    except Exception as e:  # noqa: BLE001 - whatever failed, train without it
        warnings.warn(
            "dask-adadamp: the dashboard page is off for this client: the "
            f"scheduler plugin could not be registered ({type(e).__name__}: "
            f"{e}). Training goes on without it. Install dask_adadamp in the "
            "scheduler's environment to get the page.",
            DashboardOffWarning, stacklevel=3)
        ok = False
    try:
        _registered[client] = ok
    except TypeError:
        pass
    return ok


class FitMonitor:
    """Report one fit's progress to the dask-adadamp dashboard page.

    Update records are buffered and sent at most every
    ``FLUSH_INTERVAL`` seconds (and at every epoch and at the end), so an
    update costs a few microseconds and a send (one round trip to the
    scheduler, about 0.5 ms) happens twice a second. No method raises:
    monitoring must never break training.

    Parameters
    ----------
    client : distributed.Client
        The client of the fit; its scheduler gets the plugin on first use.
    name : str
        What the page calls the fit, e.g. ``"DaskClassifier(MLP) 3f2a9c1b"``.
    info : dict, optional
        Extras shown with the fit, e.g. ``{"schedule": "AdaDamp(initial=32)",
        "n_train": 1000}``; values that are not numbers or strings are sent
        as their ``str``.

    Attributes
    ----------
    fit_id : str
        A unique id of the fit (a uuid's hex).
    enabled : bool
        False when the plugin could not be registered: then every method
        does nothing.
    """

    def __init__(self, client, name, info=None):
        self.client = client
        self.name = _clip(str(name), messages.MAX_NAME_CHARS)
        self.fit_id = uuid.uuid4().hex
        self.closed = False
        self._started = time.monotonic()
        self._last_flush = self._started
        self._updates = {c: [] for c in UPDATE_COLUMNS}
        self._epochs = {c: [] for c in EPOCH_COLUMNS}
        self._signal_name = None
        self._workers = {}  # address -> [calls, round trip s, compute s]
        self._worker_s = 0.0  # worker-seconds of the updates so far
        self.enabled = _ensure_plugin(client)
        try:
            info = dict(list((info or {}).items())[:messages.MAX_INFO_ITEMS])
            info = {_clip(str(k), messages.MAX_KEY_CHARS): _value(v)
                    for k, v in info.items()}
            info = {k: _clip(v, messages.MAX_TEXT_CHARS) if type(v) is str else v
                    for k, v in info.items()}
        except Exception:
            logger.debug("dask-adadamp dashboard: bad info", exc_info=True)
            info = {"info": _clip(str(info), messages.MAX_TEXT_CHARS)}
        client_id = getattr(client, "id", None)
        if type(client_id) is not str or len(client_id) > messages.MAX_ID_CHARS:
            client_id = None
        self._send("start", name=self.name, info=info, client=client_id)

    def update(self, record, workers=None):
        """Buffer one model update's record; send the buffer if it is due.

        Parameters
        ----------
        record : dict
            ``update`` (cumulative, 1-based), ``epoch``, ``epochs``
            (epochs done, fractional), ``batch_size``,
            ``lr``, ``n_workers``, ``loss``, ``examples_per_s``, and
            optionally ``signal_name`` (``"loss_ratio"`` or
            ``"noise_scale"``) with ``signal``, ``compute_ms`` and
            ``comm_ms`` (the slowest worker's compute and the rest of the
            update's calls), and the resource bill: ``workers_wanted``,
            ``workers_asked``, ``workers_present``, ``worker_s``
            (worker-seconds held during the update) and ``short`` (bool).
            Missing keys, and values that are not numbers, become None;
            the monitor adds ``worker_s_total``, the sum of ``worker_s``
            over the fit's updates so far.
        workers : dict, optional
            ``{address: [round trip ms, compute ms]}`` of the update's
            calls; the page shows each worker's means over the fit.
        """
        if not self.enabled or self.closed:
            return
        try:
            now = time.monotonic()
            if len(self._updates["time"]) >= messages.MAX_MESSAGE_ROWS:
                self.flush()  # the plugin takes no larger message
            rows = self._updates
            for column in _RECORD_COLUMNS:
                rows[column].append(_number(record.get(column)))
            rows["time"].append(now - self._started)
            worker_s = rows["worker_s"][-1]
            if worker_s is not None:
                self._worker_s += worker_s
            rows["worker_s_total"].append(
                self._worker_s if worker_s is not None else None)
            for addr, (rtt, compute) in (workers or {}).items():
                addr = _clip(str(addr), messages.MAX_TEXT_CHARS)
                if (addr not in self._workers
                        and len(self._workers) >= messages.MAX_WORKERS):
                    continue
                acc = self._workers.setdefault(addr, [0, 0.0, 0.0])
                acc[0] += 1
                acc[1] += rtt
                acc[2] += compute
            if record.get("signal_name") is not None:
                self._signal_name = _clip(str(record["signal_name"]),
                                          messages.MAX_KEY_CHARS)
            if now - self._last_flush >= FLUSH_INTERVAL:
                self.flush()
        except Exception:
            logger.debug("dask-adadamp dashboard: update failed", exc_info=True)

    def epoch(self, record):
        """Record one epoch and send everything buffered.

        Parameters
        ----------
        record : dict
            ``epoch``, ``model_updates``, ``train_loss``, ``valid_loss``
            (may be None) and ``dur`` (seconds); optionally ``worker_s``
            (worker-seconds held), ``updates_short`` (updates run short of
            the workers wanted) and ``scale_lags_s`` (the lags, in seconds,
            of the scale-ups completed in the epoch), sent as
            ``scale_ups`` (their count), ``scale_lag_s`` (mean) and
            ``scale_lag_max_s``.
        """
        if not self.enabled or self.closed:
            return
        try:
            if len(self._epochs["epoch"]) >= messages.MAX_MESSAGE_ROWS:
                self.flush()
            record = {**record, **_lags(record.get("scale_lags_s"))}
            for column in EPOCH_COLUMNS:
                self._epochs[column].append(_number(record.get(column)))
        except Exception:
            logger.debug("dask-adadamp dashboard: epoch failed", exc_info=True)
        self.flush(kind="epoch")

    def flush(self, kind="updates", **extra):
        """Send the buffered rows (and ``extra`` fields) in one message."""
        if not self.enabled:
            return
        self._last_flush = time.monotonic()
        updates, self._updates = self._updates, {c: [] for c in UPDATE_COLUMNS}
        epochs, self._epochs = self._epochs, {c: [] for c in EPOCH_COLUMNS}
        workers = {addr: {"calls": n, "compute_ms": _number(compute / n),
                          "comm_ms": _number((rtt - compute) / n)}
                   for addr, (n, rtt, compute) in self._workers.items()}
        self._send(kind, updates=updates, epochs=epochs, workers=workers,
                   signal_name=self._signal_name, **extra)

    def close(self, status="finished"):
        """Send what is left and mark the fit ``status``; later calls do nothing.

        Parameters
        ----------
        status : {"finished", "failed"}
        """
        if self.closed:
            return
        try:
            self.flush(kind="end", status=str(status))
        finally:
            self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close("failed" if exc_type is not None else "finished")

    def _send(self, kind, **fields):
        if not self.enabled:
            return
        try:
            self.client.log_event(TOPIC, {"fit": self.fit_id, "kind": kind,
                                          **fields})
        except Exception:
            logger.debug("dask-adadamp dashboard: sending %r failed", kind,
                         exc_info=True)


