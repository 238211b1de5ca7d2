"""The live ``/adadamp`` page: Bokeh components in the dashboard's style.

The page reads the fits a :class:`~dask_adadamp.dashboard.DashboardPlugin`
keeps, every ``PAGE_INTERVAL`` ms, and streams only the rows the browser
does not have yet. Whatever a fit holds, a refresh does not raise. The
components only read the plugin's state (:mod:`dask_adadamp._plugin`), as
distributed's pages read its diagnostics plugins, in the scheduler's process.
"""
import logging
import math
import time

from distributed.utils import log_errors
from tornado.web import OutputTransform

from ._messages import EPOCH_COLUMNS, MAX_NAME_CHARS, UPDATE_COLUMNS

logger = logging.getLogger(__name__)

PAGE_INTERVAL = 500  # ms between two refreshes of an open page
# The page's update columns: the rows', and "short_at" (the workers an
# update used where it ran short, else NaN: the red dots).
_UPDATE_SOURCE = UPDATE_COLUMNS + ("short_at",)
LOG_INTERVAL = 60  # seconds: at most one log line about failed refreshes


def _distributed_dashboard(app):
    """The scheduler's own Bokeh application, or None when it has none."""
    try:
        from bokeh.server.server import BokehTornado
    except ImportError:
        return None
    for application in getattr(app, "applications", []):
        if isinstance(application, BokehTornado):
            return application
    return None


def _add_page(plugin, scheduler, app, prefix):
    """Serve the Bokeh page at ``<prefix>/adadamp`` like the built-in ones."""
    from functools import partial

    from distributed.dashboard import scheduler as dashboard_scheduler
    from distributed.dashboard.core import BokehApplication
    from tornado.ioloop import IOLoop

    # The built-in pages share this (memoized) dict, so an entry added here
    # shows in every page's navigation bar.
    variables = dashboard_scheduler.template_variables(scheduler)
    if "adadamp" not in variables["pages"]:
        variables["pages"].append("adadamp")
    bokeh_app = BokehApplication({"/adadamp": partial(_page_doc, plugin)},
                                 scheduler, prefix=prefix,
                                 template_variables=variables)
    bokeh_app.add_transform(_NoSniff)  # this page's responses only
    app.add_application(bokeh_app)
    bokeh_app.initialize(IOLoop.current())
    bokeh_app.start()


class _NoSniff(OutputTransform):
    """``X-Content-Type-Options: nosniff``: browsers take the page for the
    type it says it is, never guess another."""

    def transform_first_chunk(self, status_code, headers, chunk, finishing):
        headers.setdefault("X-Content-Type-Options", "nosniff")
        return status_code, headers, chunk


def _page_doc(plugin, scheduler, extra, doc):
    from distributed.dashboard.components import add_periodic_callback
    from distributed.dashboard.components.scheduler import BOKEH_THEME, env

    with log_errors():  # as distributed's own pages: logged, then raised
        page = AdadampPage(plugin)
        page.update()
        add_periodic_callback(doc, page, PAGE_INTERVAL)
        doc.add_root(page.root)
        doc.title = "dask-adadamp"
        doc.theme = BOKEH_THEME
        doc.template = env.get_template("simple.html")
        doc.template_variables.update(extra)


SIGNAL_TITLES = {"loss_ratio": "Loss ratio", "noise_scale": "Noise-scale estimate"}


class AdadampPage:
    """The Bokeh components of one open ``/adadamp`` page.

    Shows one fit: the most recent, until another is picked in the select
    box. ``update`` (every ``PAGE_INTERVAL`` ms) streams only the rows the
    browser does not have yet.

    Parameters
    ----------
    plugin : DashboardPlugin
        Where the fits are.
    """

    def __init__(self, plugin):
        from bokeh.layouts import column, gridplot, row
        from bokeh.models import (
            ColumnDataSource,
            Div,
            LogTicker,
            RadioButtonGroup,
            Select,
        )

        self.plugin = plugin
        self.fit_id = None
        self.follow_latest = True
        self.seen_changes = -1
        self._last_error = -math.inf
        self.sent = {"updates": (0, 0), "epochs": (0, 0)}  # (version, rows)
        self.sources = {
            "updates": ColumnDataSource({c: [] for c in _UPDATE_SOURCE},
                                        name="adadamp-updates"),
            "epochs": ColumnDataSource({c: [] for c in EPOCH_COLUMNS},
                                       name="adadamp-epochs"),
        }
        self.select = Select(title="Fit", options=[], width=500,
                             name="adadamp-select")
        self.select.on_change("value", self._on_select)
        self.info = Div(text="No dask-adadamp fit yet.", name="adadamp-info",
                        sizing_mode="stretch_width")

        self.lines = []  # the per-update lines, whose x the switch sets

        def plot(title, y, x="update", source="updates", **kwargs):
            fig = self._figure(title, x, **kwargs)
            self.lines.append(fig.line(x, y, source=self.sources[source],
                                       line_width=2))
            return fig

        # Schedules grow the batch geometrically; ticks at powers of two.
        batch = plot("Batch size", "batch_size", y_axis_type="log")
        batch.yaxis.ticker = LogTicker(base=2, mantissas=[1])
        x_range = batch.x_range  # zoom and pan together along the updates
        self.signal_plot = plot("Schedule signal", "signal", x_range=x_range)
        epochs = self._figure("Loss per epoch", "epoch")
        for y, color, label in (("train_loss", "#1f77b4", "train"),
                                ("valid_loss", "#ff7f0e", "valid")):
            epochs.line("epoch", y, source=self.sources["epochs"], color=color,
                        line_width=2, legend_label=label)
            epochs.scatter("epoch", y, source=self.sources["epochs"],
                           color=color, size=5)
        epochs.legend.location = "top_right"
        # Where an update's time goes: the slowest worker's compute, and the
        # rest of its calls (weights out, sums back, waiting).
        times = self._figure("Update time (ms)", "update", x_range=x_range)
        for y, color, label in (("compute_ms", "#2ca02c", "compute"),
                                ("comm_ms", "#d62728", "communication")):
            self.lines.append(times.line("update", y, source=self.sources["updates"],
                                         color=color, line_width=2,
                                         legend_label=label))
        times.legend.location = "top_right"
        # The resource bill: the workers the batch wanted, the size the
        # cluster was asked for, the workers it had and those the update
        # used; a red dot on "used" where the update ran short.
        workers = self._figure("Workers", "update", x_range=x_range)
        for y, color, dash, label in (
                ("workers_wanted", "#9467bd", "dashed", "wanted"),
                ("workers_asked", "#ff7f0e", "dotted", "asked"),
                ("workers_present", "#7f7f7f", "solid", "present"),
                ("n_workers", "#1f77b4", "solid", "used")):
            self.lines.append(workers.line(
                "update", y, source=self.sources["updates"], color=color,
                line_dash=dash, line_width=2, legend_label=label))
        self.lines.append(workers.scatter(
            "update", "short_at", source=self.sources["updates"],
            color="#d62728", size=5, legend_label="short"))
        workers.legend.location = "top_left"
        self.plots = [
            batch,
            plot("Learning rate", "lr", x_range=x_range),
            workers,
            plot("Training loss", "loss", x_range=x_range),
            plot("Examples per second", "examples_per_s", x_range=x_range),
            self.signal_plot,
            times,
            plot("Worker-seconds held (cumulative)", "worker_s_total",
                 x_range=x_range),
            epochs,
        ]
        self.workers = Div(text="", name="adadamp-workers",
                           sizing_mode="stretch_width")
        self.x_axis = RadioButtonGroup(labels=["model updates", "epochs"],
                                       active=0, name="adadamp-x-axis")
        self.x_axis.on_change("active", self._on_x_axis)
        self.root = column(
            row(self.select, self.x_axis, self.info, sizing_mode="stretch_width"),
            gridplot(self.plots, ncols=2, sizing_mode="stretch_width",
                     height=180, toolbar_location="right"),
            self.workers,
            sizing_mode="stretch_width", name="adadamp-root")

    @staticmethod
    def _figure(title, x, **kwargs):
        from bokeh.plotting import figure

        fig = figure(title=title, tools="pan,wheel_zoom,box_zoom,reset",
                     x_axis_label="model update" if x == "update" else x,
                     **kwargs)
        fig.toolbar.logo = None
        return fig

    def update(self):
        """Refresh from the plugin; cheap when nothing changed.

        Never raises, whatever a fit holds: a refresh that fails is logged
        (once a minute, not by ``log_errors``: this runs twice a second) and
        the next one tries again.
        """
        try:
            self._update()
        except Exception:  # noqa: BLE001 - the periodic callback must live on
            now = time.monotonic()
            if now - self._last_error >= LOG_INTERVAL:
                self._last_error = now
                logger.warning("dask-adadamp: the /adadamp page could not "
                               "refresh", exc_info=True)

    def _update(self):
        if self.plugin.changes == self.seen_changes:
            return
        self.seen_changes = self.plugin.changes
        fits = self.plugin.fits
        if not fits:
            return
        latest = next(reversed(fits))
        if self.follow_latest or self.fit_id not in fits:
            self._show(latest)
        options = [(k, f"{_text(f.name)} ({_text(f.status)})")
                   for k, f in reversed(fits.items())]
        if options != [tuple(o) for o in self.select.options]:
            self.select.options = options
        if self.select.value != self.fit_id:
            self.select.value = self.fit_id
        fit = fits[self.fit_id]
        for table in ("updates", "epochs"):
            self._stream(table, getattr(fit, table))
        name = fit.signal_name if isinstance(fit.signal_name, str) else None
        signal = SIGNAL_TITLES.get(name, name)
        self.signal_plot.visible = signal is not None
        if signal is not None and self.signal_plot.title.text != signal:
            self.signal_plot.title.text = signal
        text = self._info_text(fit)
        if self.info.text != text:
            self.info.text = text
        text = self._workers_text(fit)
        if self.workers.text != text:
            self.workers.text = text

    def _show(self, fit_id):
        if fit_id != self.fit_id:
            self.fit_id = fit_id
            self.sent = {"updates": (-1, 0), "epochs": (-1, 0)}

    @log_errors
    def _on_x_axis(self, attr, old, new):
        x, label = [("update", "model update"), ("epochs", "epochs")][new]
        for line in self.lines:
            line.glyph.x = x
        for fig in self.plots[:-1]:  # the last one is per epoch already
            fig.xaxis.axis_label = label

    @log_errors
    def _on_select(self, attr, old, new):
        if new and new != self.fit_id and new in self.plugin.fits:
            self.follow_latest = new == next(reversed(self.plugin.fits))
            self._show(new)
            self.seen_changes = -1
            self.update()

    def _stream(self, name, table):
        import numpy as np

        version, sent = self.sent[name]
        if version == table.version and sent == len(table):
            return
        if version == table.version:
            start = sent
        else:
            start = 0  # thinned or another fit: send it whole
        # Floats, so that None (a gap) arrives as NaN; anything else too.
        new = {c: _floats(np.array, v[start:]) for c, v in table.columns.items()}
        if name == "updates":
            # Where the update ran short: its workers used, else a gap.
            short = new.get("short", np.full(len(new["update"]), np.nan))
            used = new.get("n_workers", np.full(len(short), np.nan))
            new["short_at"] = np.where(short > 0, used, np.nan)
        if start:
            self.sources[name].stream(new)
        else:
            self.sources[name].data = new
        self.sent[name] = (table.version, len(table))

    @staticmethod
    def _info_text(fit):
        from html import escape

        info = fit.info if isinstance(fit.info, dict) else {"info": fit.info}
        extras = ", ".join(f"{escape(_text(k))}: {escape(_text(v))}"
                           for k, v in info.items())
        n_updates = fit.updates.seen
        n_epochs = fit.epochs.seen
        bill = _bill_text(fit)
        return (f"<b>{escape(_text(fit.name))}</b> &mdash; "
                f"{escape(_text(fit.status))}, "
                f"{n_updates} model updates, {n_epochs} epochs"
                + (f"<br>{bill}" if bill else "")
                + (f"<br>{extras}" if extras else ""))

    @staticmethod
    def _workers_text(fit):
        """Each worker's mean compute and communication per call."""
        from html import escape

        if not fit.workers or not isinstance(fit.workers, dict):
            return ""
        rows = "".join(
            f"<tr><td>{escape(_text(addr))}</td><td>{escape(_text(w.get('calls')))}</td>"
            f"<td>{_ms(w.get('compute_ms'))}</td><td>{_ms(w.get('comm_ms'))}</td></tr>"
            for addr, w in sorted(fit.workers.items(), key=lambda i: _text(i[0]))
            if isinstance(w, dict))
        return ("<b>Per worker</b> (means over the fit's calls)<table>"
                "<tr><th>worker</th><th>calls</th><th>compute (ms)</th>"
                "<th>communication (ms)</th></tr>" + rows + "</table>")


def _bill_text(fit):
    """The fit's resource bill, in a line: worker-seconds held, updates
    short of workers and scale-ups with their lags; "" when the fit sends
    none of it.

    Worker-seconds are the last cumulative value the update rows hold; the
    counts, the sums of the epochs done.
    """
    def numbers(table, column):
        values = table.columns.get(column) or ()
        return [v for v in values if type(v) in (int, float) and math.isfinite(v)]

    parts = []
    held = numbers(fit.updates, "worker_s_total")
    if held:
        parts.append(f"{held[-1]:.1f} worker-seconds held")
    short = numbers(fit.epochs, "updates_short")
    if short:
        parts.append(f"{int(sum(short))} updates short of workers")
    ups = numbers(fit.epochs, "scale_ups")
    if ups:
        lags = numbers(fit.epochs, "scale_lag_max_s")
        longest = f", longest lag {max(lags):.1f} s" if lags else ""
        parts.append(f"{int(sum(ups))} scale-ups{longest}")
    return ", ".join(parts)


def _ms(value):
    return (f"{value:.2f}" if type(value) in (int, float) and math.isfinite(value)
            else "-")


def _text(value):
    """``str(value)``, short, for the page; whatever ``value`` is."""
    try:
        text = value if type(value) is str else str(value)
    except Exception:  # noqa: BLE001 - a __str__ that raises
        text = type(value).__name__
    return text[:MAX_NAME_CHARS]


def _floats(array, values):
    """``values`` as a float array; what is not a number becomes NaN."""
    try:
        return array(values, dtype=float)
    except (TypeError, ValueError, OverflowError):
        return array([v if type(v) in (int, float) else None for v in values],
                     dtype=float)
