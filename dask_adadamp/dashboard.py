"""A live dask-adadamp page in the Dask dashboard.

A fit reports its progress to the scheduler with a :class:`FitMonitor`;
a :class:`DashboardPlugin` on the scheduler keeps the recent fits and serves
them at ``/adadamp`` (a live Bokeh page in the dashboard's style, in
:mod:`dask_adadamp._page`) and ``/adadamp/metrics.json``::

    monitor = FitMonitor(client, "DaskClassifier(MLP) 3f2a9c1b04de",
                         {"schedule": "AdaDamp(initial=32)"})
    monitor.update({"update": 1, "epoch": 1, "batch_size": 32, "lr": 0.1,
                    "n_workers": 2, "loss": 2.3, "examples_per_s": 900.0})
    monitor.epoch({"epoch": 1, "model_updates": 10, "train_loss": 2.1,
                   "valid_loss": None, "dur": 1.5})
    monitor.close()

Messages travel with ``client.log_event("adadamp", msg)``; the scheduler
hands every event to every plugin's ``log_event``. Each message is a dict
``{"fit": id, "kind": "start" | "updates" | "epoch" | "end", ...}`` and may
carry new rows as ``"updates"`` and ``"epochs"``, each ``{column: [values]}``;
:mod:`dask_adadamp._messages` has the schema and the limits, and the plugin
drops whatever does not fit them. The plugin's class is pickled by
reference, so ``dask_adadamp`` must be importable on the scheduler; where it
is not, the monitor warns once and does nothing.
"""
import logging
import math
import numbers
import time
import uuid
import warnings
import weakref
from collections import Counter, OrderedDict

from distributed.diagnostics.plugin import SchedulerPlugin
from tornado import web

from . import _messages as messages
from .exceptions import DashboardOffWarning
from ._messages import EPOCH_COLUMNS, TOPIC, UPDATE_COLUMNS, Refused
from ._page import (  # noqa: F401 - public here too
    PAGE_INTERVAL,
    SIGNAL_TITLES,
    AdadampPage,
    _add_page,
    _distributed_dashboard,
)

logger = logging.getLogger(__name__)

PLUGIN_NAME = "dask-adadamp-dashboard"
# "time" is added by the monitor: seconds since the fit started.
_RECORD_COLUMNS = tuple(c for c in UPDATE_COLUMNS if c != "time")
FLUSH_INTERVAL = 0.5  # seconds between two sends of buffered update rows
MAX_FITS = 20
# Running fits one client may have on the page; past it its new fits are
# not shown (training goes on), so one client cannot take every place.
MAX_RUNNING_PER_CLIENT = 10
# Rows per fit; more are thinned. A full fit's JSON takes ~30 ms to write.
MAX_ROWS = 10_000
LOG_INTERVAL = 60  # seconds: at most one log line about refused messages

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
    """``x`` as a row value: a number or None (the plugin takes no other)."""
    x = _value(x)
    if type(x) is int and not -2**63 <= x < 2**63:
        return float(x)  # msgpack's ints have 64 bits
    return x if type(x) in (int, float) else None


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
            update's calls). Missing keys, and values that are not
            numbers, become None.
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
            (may be None) and ``dur`` (seconds).
        """
        if not self.enabled or self.closed:
            return
        try:
            if len(self._epochs["epoch"]) >= messages.MAX_MESSAGE_ROWS:
                self.flush()
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


class _Table:
    """Columns of rows that stay under ``max_rows`` by thinning.

    When full, every other row is dropped and from then on only every
    ``stride``-th row is kept, so a long fit keeps its whole shape at a
    coarser resolution. ``version`` counts the thinnings, which tells a
    page that the rows it already has are stale.
    """

    def __init__(self, columns, max_rows):
        self.columns = {c: [] for c in columns}
        self.max_rows = max_rows
        self.stride = 1
        self.seen = 0
        self.version = 0

    def __len__(self):
        return len(next(iter(self.columns.values())))

    def extend(self, rows):
        """Append ``rows`` (``{column: list}``; missing columns and values
        are None), keeping every ``stride``-th row."""
        if not rows:
            return
        n = max(len(v) for v in rows.values())
        i = 0
        while i < n:
            # Slices up to the row that fills the table: a list's extend
            # per column, not an append per value.
            first = i + (-self.seen) % self.stride  # the next row kept
            room = max(1, self.max_rows - len(self))
            stop = min(n, first + (room - 1) * self.stride + 1)
            if first < stop:
                kept = len(range(first, stop, self.stride))
                for name, column in self.columns.items():
                    values = rows.get(name)
                    values = values[first:stop:self.stride] if values else ()
                    column.extend(values)
                    if len(values) < kept:
                        column.extend([None] * (kept - len(values)))
            self.seen += stop - i
            i = stop
            if len(self) >= self.max_rows:
                for column in self.columns.values():
                    del column[1::2]
                self.stride *= 2
                self.version += 1


class _Fit:
    def __init__(self, fit_id, max_rows):
        self.fit = fit_id
        self.name = fit_id
        self.info = {}
        self.client = None
        self.status = "running"
        self.started = self.updated = time.time()
        self.signal_name = None
        self.workers = {}
        self.updates = _Table(UPDATE_COLUMNS, max_rows)
        self.epochs = _Table(EPOCH_COLUMNS, max_rows)

    def to_dict(self):
        return {"fit": self.fit, "name": self.name, "info": self.info,
                "status": self.status, "started": self.started,
                "updated": self.updated, "signal_name": self.signal_name,
                "workers": self.workers,
                "updates": self.updates.columns,
                "epochs": self.epochs.columns}


class DashboardPlugin(SchedulerPlugin):
    """Scheduler plugin that keeps recent fits and serves the page.

    Registered by :class:`FitMonitor`. It adds to the scheduler's web
    server ``/adadamp/metrics.json`` and, when the scheduler runs the
    Bokeh dashboard, the live page ``/adadamp`` with a link in the
    navigation bar.

    Any client can send under the topic, so every message is checked
    (:func:`dask_adadamp._messages.check`) and one that does not pass is
    dropped: counted in ``refused``, logged at most once a minute, replaced
    by a small stub in the scheduler's event log, never raised. A fit is
    only evicted once it has ended or its client has left; a new fit
    past the bounds is not shown rather than evict a running one.

    Parameters
    ----------
    max_fits : int
        How many fits are kept; the oldest ended ones go first.
    max_rows : int
        Rows kept per fit and table (2 or more), by thinning (see ``_Table``).
    max_running_per_client : int
        Running fits kept per client (fits that name no client count as
        one client).

    Attributes
    ----------
    refused : collections.Counter
        Messages dropped, by reason: ``"invalid"`` (see
        :mod:`dask_adadamp._messages`), ``"unknown fit"`` (no start seen, or
        the fit was evicted or refused), ``"ended fit"``, ``"duplicate
        start"``, ``"client not connected"``, ``"client's running fits"``,
        ``"running fits"`` (every place taken by a running fit), ``"error"``.

    Examples
    --------
    >>> plugin = DashboardPlugin()
    >>> plugin.log_event("adadamp", {"fit": "f1", "kind": "start", "name": "Net"})
    >>> plugin.log_event("adadamp", {"fit": "f1", "kind": "updates",
    ...                              "updates": {"loss": ["oops"]}})
    >>> plugin.log_event("adadamp", {"fit": "f2", "kind": "end"})
    >>> dict(plugin.refused), list(plugin.fits)
    ({'invalid': 1, 'unknown fit': 1}, ['f1'])
    """

    name = PLUGIN_NAME
    idempotent = True

    def __init__(self, max_fits=MAX_FITS, max_rows=MAX_ROWS,
                 max_running_per_client=MAX_RUNNING_PER_CLIENT):
        self.max_fits = max_fits
        self.max_rows = max_rows
        self.max_running_per_client = max_running_per_client
        self.fits = OrderedDict()
        # Bumped on every change so pages skip refreshes with nothing new.
        self.changes = 0
        self.refused = Counter()
        self.scheduler = None  # set by start; without it clients are not checked
        self._unreported = 0
        self._last_report = -math.inf

    async def start(self, scheduler):
        # No await in here: the scheduler checks for an existing plugin only
        # before calling start, so an await could let two concurrent
        # registrations both add the routes.
        self.scheduler = scheduler
        app = getattr(scheduler, "http_application", None)
        if app is None:
            return
        dashboard = _distributed_dashboard(app)
        prefix = dashboard.prefix.rstrip("/") if dashboard is not None else ""
        app.add_handlers(r".*", [(prefix + r"/adadamp/metrics\.json",
                                  _MetricsHandler, {"plugin": self})])
        if dashboard is not None:
            try:
                _add_page(self, scheduler, app, dashboard.prefix)
            except Exception:
                logger.warning("dask-adadamp: could not add the /adadamp page",
                               exc_info=True)

    def log_event(self, topic, msg):
        """Take a message of a :class:`FitMonitor`, or drop it; never raises.

        Cheap, it runs in the scheduler's event loop: a message's size is
        checked from its lengths before any of its values is read.
        """
        if topic != TOPIC:
            return
        try:
            self._take(msg)
            # The plugin keeps what it took; the scheduler's event log (the
            # topic's last 1000 messages, whatever their size) keeps a stub.
            # Subscribers of the topic got the whole message already.
            self._stub_event(msg, {"fit": msg["fit"], "kind": msg["kind"],
                                   "rows": _rows(msg), "stored": True})
        except _Drop as e:
            self._refuse(msg, e.reason, e.detail)
        except Refused as e:
            self._refuse(msg, "invalid", str(e))
        except Exception as e:  # noqa: BLE001 - a bug must not reach the scheduler
            self._refuse(msg, "error", f"{type(e).__name__}: {e}")

    def _take(self, msg):
        msg = messages.check(msg)
        fit = self.fits.get(msg["fit"])
        if msg["kind"] == "start":
            if fit is not None:
                raise _Drop("duplicate start")
            fit = self._new_fit(msg)
            fit.name = msg.get("name", fit.name)
            fit.info = msg.get("info", {})
        elif fit is None:
            raise _Drop("unknown fit")
        elif fit.status != "running":
            raise _Drop("ended fit")
        fit.updates.extend(msg.get("updates"))
        fit.epochs.extend(msg.get("epochs"))
        if msg.get("signal_name"):
            fit.signal_name = msg["signal_name"]
        if "workers" in msg:
            fit.workers = msg["workers"]
        if msg["kind"] == "end":
            fit.status = "failed" if msg.get("status") == "failed" else "finished"
        fit.updated = time.time()
        self.changes += 1

    def _new_fit(self, msg):
        """Place a new fit, or raise _Drop: never evicts a running fit."""
        client = msg.get("client")
        if client is not None and not self._connected(client):
            raise _Drop("client not connected", client)
        running = sum(f.client == client for f in self.fits.values()
                      if self._running(f))
        if running >= self.max_running_per_client:
            raise _Drop("client's running fits", f"{client}: {running}")
        while len(self.fits) >= self.max_fits:
            ended = next((k for k, f in self.fits.items()
                          if not self._running(f)), None)
            if ended is None:
                raise _Drop("running fits", str(len(self.fits)))
            del self.fits[ended]
        fit = self.fits[msg["fit"]] = _Fit(msg["fit"], self.max_rows)
        fit.client = client
        return fit

    def _connected(self, client):
        clients = getattr(self.scheduler, "clients", None)
        return clients is None or client in clients

    def _running(self, fit):
        """Running, as far as eviction goes: not ended, and its client is
        still there (``remove_client`` marks it failed when it leaves)."""
        return fit.status == "running" and (fit.client is None
                                            or self._connected(fit.client))

    def _refuse(self, msg, reason, detail):
        try:
            self.refused[reason] += 1
            self._unreported += 1
            detail = messages.dumps(detail)[:300]
            self._stub_event(msg, {"fit": None, "kind": "refused",
                                   "reason": reason, "detail": detail})
            now = time.monotonic()
            if now - self._last_report >= LOG_INTERVAL:
                logger.warning(
                    "dask-adadamp: the dashboard dropped %d message(s) since "
                    "its last report (at most one a minute); the latest: %s "
                    "(%s). Counts so far: %s", self._unreported, reason,
                    detail, dict(self.refused))
                self._last_report, self._unreported = now, 0
        except Exception:  # noqa: BLE001 - never into the scheduler
            pass

    def _stub_event(self, msg, stub):
        """Put ``stub`` in place of ``msg`` in the scheduler's event log
        (the last 1000 messages of the topic), so that the log does not
        hold up to 1000 messages of rows (about 0.9 GB at the limits)."""
        broker = getattr(self.scheduler, "_broker", None)  # distributed's own
        topic = getattr(broker, "_topics", {}).get(TOPIC)
        events = getattr(topic, "events", None)
        if events and events[-1][1] is msg:
            events[-1] = (events[-1][0], stub)

    def remove_client(self, scheduler, client):
        # A client that leaves mid-fit never sends "end".
        for fit in self.fits.values():
            if fit.client == client and fit.status == "running":
                fit.status = "failed"
                fit.updated = time.time()
                self.changes += 1

    def metrics(self, fit_id=None):
        """The ``metrics.json`` document: ``{"fits": [fit, ...]}``, oldest
        first, or only the fit ``fit_id``."""
        return {"fits": [f.to_dict() for f in self.fits.values()
                         if fit_id is None or f.fit == fit_id]}


def _rows(msg):
    """Update and epoch rows in a checked message."""
    return sum(len(next(iter(table.values()), ()))
               for table in (msg.get("updates"), msg.get("epochs")) if table)


class _Drop(Exception):
    """A valid message the plugin does not take (see ``refused``)."""

    def __init__(self, reason, detail=""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


class _MetricsHandler(web.RequestHandler):
    """``GET /adadamp/metrics.json[?fit=ID]``."""

    def initialize(self, plugin):
        self.plugin = plugin

    def get(self):
        try:
            doc = self.plugin.metrics(self.get_argument("fit", None))
        except Exception as e:  # noqa: BLE001 - answer, whatever is stored
            logger.debug("dask-adadamp: metrics failed", exc_info=True)
            doc = {"fits": [], "error": type(e).__name__}
        self.set_header("Content-Type", "application/json")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.write(messages.dumps(doc))
