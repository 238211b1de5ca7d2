"""The scheduler side of the dashboard page: :class:`DashboardPlugin`.

Runs in the scheduler's process, in its event loop: it takes the messages of
the :class:`~dask_adadamp.dashboard.FitMonitor` of every fit (checked with
:mod:`dask_adadamp._messages`; what fails is refused), keeps the recent
fits, and serves ``/adadamp/metrics.json``. The fits it keeps are the state
the Bokeh page (:mod:`dask_adadamp._page`) reads, as distributed's own pages
read its diagnostics plugins. The scheduler imports this module (and
:mod:`dask_adadamp.dashboard`, which re-exports the class) to unpickle the
plugin: it must import neither torch nor skorch.
"""
import logging
import math
import time
from collections import Counter, OrderedDict

from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.utils import log_errors
from tornado import web

from . import _messages as messages
from ._messages import EPOCH_COLUMNS, TOPIC, UPDATE_COLUMNS, Refused
from ._page import _add_page, _distributed_dashboard

# The logger the dashboard always had, wherever its code lives.
logger = logging.getLogger("dask_adadamp.dashboard")

PLUGIN_NAME = "dask-adadamp-dashboard"
MAX_FITS = 20
# Running fits one client may have on the page; past it its new fits are
# not shown (training goes on), so one client cannot take every place.
MAX_RUNNING_PER_CLIENT = 10
# Rows per fit; more are thinned. A full fit's JSON takes ~30 ms to write.
MAX_ROWS = 10_000
LOG_INTERVAL = 60  # seconds: at most one log line about refused messages


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

    Registered by :class:`~dask_adadamp.dashboard.FitMonitor`. It adds to
    the scheduler's web server ``/adadamp/metrics.json`` and, when it runs the
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

    # Its public path, and the one its pickle names: the scheduler imports
    # dask_adadamp.dashboard to unpickle it, as before the modules were split.
    __module__ = "dask_adadamp.dashboard"
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
        """Take a message of a :class:`~dask_adadamp.dashboard.FitMonitor`,
        or drop it; never raises.

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

    @log_errors
    def get(self):
        try:
            doc = self.plugin.metrics(self.get_argument("fit", None))
        except Exception as e:  # noqa: BLE001 - answer, whatever is stored
            logger.debug("dask-adadamp: metrics failed", exc_info=True)
            doc = {"fits": [], "error": type(e).__name__}
        self.set_header("Content-Type", "application/json")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.write(messages.dumps(doc))
