"""A live dask-adadamp page in the Dask dashboard.

A fit reports its progress to the scheduler with a :class:`FitMonitor`;
a :class:`DashboardPlugin` on the scheduler keeps the recent fits and serves
them at ``/adadamp`` (a live Bokeh page in the dashboard's style,
:class:`AdadampPage`) and ``/adadamp/metrics.json``::

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
is not, the monitor warns once (:class:`~dask_adadamp.exceptions.DashboardOffWarning`)
and does nothing.

The code runs in two processes and lives in private modules, by process;
this module re-exports their public names:

- the client's: :class:`FitMonitor` (:mod:`dask_adadamp._monitor`);
- the scheduler's: :class:`DashboardPlugin`, the fits it keeps and the
  ``metrics.json`` handler (:mod:`dask_adadamp._plugin`), and the page's
  Bokeh components, which read those fits (:mod:`dask_adadamp._page`).

None of them imports torch or skorch: the scheduler imports this module in
its event loop to unpickle the plugin.
"""
import logging

from ._messages import EPOCH_COLUMNS, TOPIC, UPDATE_COLUMNS, Refused
from ._monitor import FLUSH_INTERVAL, FitMonitor
from ._page import PAGE_INTERVAL, SIGNAL_TITLES, AdadampPage
from ._plugin import (
    LOG_INTERVAL,
    MAX_FITS,
    MAX_ROWS,
    MAX_RUNNING_PER_CLIENT,
    PLUGIN_NAME,
    DashboardPlugin,
)

__all__ = ["AdadampPage", "DashboardPlugin", "FitMonitor", "EPOCH_COLUMNS",
           "FLUSH_INTERVAL", "LOG_INTERVAL", "MAX_FITS", "MAX_ROWS",
           "MAX_RUNNING_PER_CLIENT", "PAGE_INTERVAL", "PLUGIN_NAME", "Refused",
           "SIGNAL_TITLES", "TOPIC", "UPDATE_COLUMNS"]

# The monitor's and the plugin's logger (their modules log under this name).
logger = logging.getLogger(__name__)
# The constants above are copies: each is read in the module that defines it
# (e.g. dask_adadamp._monitor.FLUSH_INTERVAL), so setting one here changes
# nothing.
