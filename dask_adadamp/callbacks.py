"""skorch callbacks that know batch sizes change during a fit, and the
Dask nets' default callbacks that record each update."""
import tqdm
from skorch.callbacks import Callback
from skorch.callbacks import PrintLog as _SkorchPrintLog
from skorch.callbacks import ProgressBar as _SkorchProgressBar
from skorch.dataset import get_len

from ._history import update_rows
from ._messages import EPOCH_COLUMNS


class ProgressBar(_SkorchProgressBar):
    """skorch's progress bar, counting examples instead of batches.

    With a batch-size schedule the number of updates in an epoch is not
    known when it starts (AdaDamp's depends on the loss), but the number of
    examples is: this bar runs over the epoch's training and validation
    examples, one step of ``len(batch)`` per batch, and shows the last
    update's values of ``postfix_keys`` beside it.

    Parameters
    ----------
    postfix_keys : list of str or None (default=None)
        Keys of ``net.history[-1, "batches", -1]`` to show; None shows
        ``train_loss``, ``batch_size``, ``lr`` and ``n_workers``.
    detect_notebook : bool (default=True)
        Draw a notebook widget in Jupyter (needs ``ipywidgets``).

    Examples
    --------
    >>> import numpy as np, torch
    >>> from distributed import Client, LocalCluster
    >>> from dask_adadamp import DaskClassifier, ProgressBar
    >>> from dask_adadamp.dampers import GeoDamp
    >>> cluster = LocalCluster(n_workers=2, threads_per_worker=1,
    ...                        processes=False, dashboard_address=':0')
    >>> client = Client(cluster)
    >>> X = np.random.default_rng(0).normal(size=(600, 4)).astype("float32")
    >>> y = (X[:, 0] > 0).astype("int64")
    >>> est = DaskClassifier(torch.nn.Linear, module__in_features=4,
    ...                      module__out_features=2,
    ...                      criterion=torch.nn.CrossEntropyLoss, lr=0.5,
    ...                      batch_size=GeoDamp(initial=32, delay=1),
    ...                      max_epochs=3, train_split=None, verbose=0,
    ...                      random_state=0, callbacks=[ProgressBar()])
    >>> est = est.fit(X, y)  # the bar is drawn on stderr
    >>> client.close(); cluster.close()

    For a long epoch it draws, and keeps updating, a line such as::

        41%|████      | 737/1.80k [00:03<00:04, 227examples/s, train_loss=0.52, batch_size=64, lr=0.1, n_workers=2]
    """

    def __init__(self, postfix_keys=None, detect_notebook=True):
        super().__init__(batches_per_epoch="auto", detect_notebook=detect_notebook,
                         postfix_keys=postfix_keys or ["train_loss", "batch_size",
                                                       "lr", "n_workers"])

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        # Dask arrays have no skorch dataset here: the bar then just counts.
        total = (None if dataset_train is None
                 else get_len(dataset_train) + (0 if dataset_valid is None
                                                else get_len(dataset_valid)))
        bar = tqdm.tqdm_notebook if self._use_notebook() else tqdm.tqdm
        self.pbar_ = bar(total=total, leave=False, unit="examples", unit_scale=True)

    def on_batch_end(self, net, batch=None, training=None, **kwargs):
        self.pbar_.set_postfix(self._get_postfix_dict(net), refresh=False)
        # A training batch is the update (its len is its examples); a
        # validation batch is skorch's (X, y).
        self.pbar_.update(len(batch) if training else get_len(batch[0]))


class PrintLog(_SkorchPrintLog):
    """skorch's epoch table, less the history's list-valued columns (the
    Dask nets' default ``print_log``).

    ``scale_lags_s`` and ``workers_lost`` hold one entry per event (a
    scale-up's lag, a lost worker's address) and are empty in most epochs:
    as columns they print ``[]``. They stay in the history; the table
    leaves them out, beside ``keys_ignored``. Parameters as skorch's
    :class:`skorch.callbacks.PrintLog`.

    Examples
    --------
    >>> from dask_adadamp import DaskRegressor
    >>> import torch
    >>> net = DaskRegressor(torch.nn.Linear, module__in_features=2,
    ...                     module__out_features=1).initialize()
    >>> sorted(dict(net.callbacks_)["print_log"].keys_ignored_)
    ['batches', 'scale_lags_s', 'workers_lost']
    """

    #: Epoch keys of the history whose values are lists.
    LIST_KEYS = ("scale_lags_s", "workers_lost")

    def initialize(self):
        super().initialize()
        self.keys_ignored_.update(self.LIST_KEYS)
        return self


class UpdateLog(Callback):
    """Record what each model update measured in the net's history (a
    default callback of the Dask nets, named ``update_log``).

    Per update, in ``history[epoch, "batches", i]``: ``n_workers``, ``lr``
    (after ``max_batch_size``'s scaling), the schedule's signal (e.g.
    ``loss_ratio``) and what the update's calls cost (``compute_ms``,
    ``comm_ms``, ``workers_ms``, ``rounds``, ``tree``, ``bytes_out``,
    ``bytes_in``) and held (the resource bill: ``workers_present``,
    ``workers_wanted``, ``workers_asked``, ``short``, ``worker_s``,
    ``scale_lags_s``, ``workers_lost``; see ``Fit.bill``). Per epoch: the
    largest ``batch_size``, the last ``lr`` and signal, ``n_workers`` (the
    cluster's size), and the bill's totals: ``worker_s``,
    ``updates_short``, ``scale_lags_s`` and ``workers_lost``. The net itself records each update's
    ``batch_size`` and each epoch's cumulative ``model_updates`` and
    ``n_examples``, which number the updates.

    Examples
    --------
    >>> from dask_adadamp import DaskRegressor
    >>> import torch
    >>> net = DaskRegressor(torch.nn.Linear, module__in_features=2,
    ...                     module__out_features=1).initialize()
    >>> [name for name, _ in net.callbacks_][-3:]
    ['update_log', 'dashboard', 'print_log']
    """

    def on_batch_end(self, net, training=False, **kwargs):
        fit = getattr(net, "_fit", None)
        if not training or fit is None or fit.record is None:
            return
        for key, value in fit.record.items():
            if key not in ("batch_size", "examples_per_s"):
                net.history.record_batch(key, value)

    def on_epoch_end(self, net, **kwargs):
        fit = getattr(net, "_fit", None)
        if fit is None:
            return
        batches = update_rows([net.history[-1]])
        # The size asked for, not the epoch's last (possibly partial) batch.
        net.history.record("batch_size", max((b["batch_size"] for b in batches), default=0))
        if batches and "lr" in batches[-1]:
            net.history.record("lr", batches[-1]["lr"])
        name = net.damper_.signal_name
        if name is not None and batches and name in batches[-1]:
            net.history.record(name, batches[-1][name])
        net.history.record("n_workers", fit.session.n_workers)
        # The epoch's resource bill (each update's is in its row).
        net.history.record("worker_s", round(sum(b.get("worker_s", 0) for b in batches), 6))
        net.history.record("updates_short", sum(bool(b.get("short")) for b in batches))
        net.history.record("scale_lags_s", [lag for b in batches
                                            for lag in b.get("scale_lags_s", [])])
        net.history.record("workers_lost", [a for b in batches
                                            for a in b.get("workers_lost", [])])


class DashboardFeed(Callback):
    """Send each update and epoch to the dask-adadamp dashboard page (a
    default callback of the Dask nets, named ``dashboard``).

    The page (``/adadamp`` on the scheduler's dashboard) shows the fit
    while it runs; see :mod:`dask_adadamp.dashboard`. A net without this
    callback (``callbacks__dashboard=None``) does not report to the
    scheduler at all.

    With each update go the keys of the fit's update record that the
    page has columns for (:data:`dask_adadamp.dashboard.UPDATE_COLUMNS`),
    the resource bill included where the fit records it
    (``workers_wanted``, ``workers_asked``, ``workers_present``,
    ``worker_s``, ``short``); with each epoch, the history's epoch columns
    (``worker_s``, ``updates_short`` among them) and ``scale_lags_s``.

    Examples
    --------
    >>> from dask_adadamp import DaskRegressor
    >>> import torch
    >>> net = DaskRegressor(torch.nn.Linear, module__in_features=2,
    ...                     module__out_features=1, callbacks__dashboard=None)
    >>> "dashboard" in dict(net.initialize().callbacks_)
    False
    """

    def on_batch_end(self, net, training=False, **kwargs):
        fit = getattr(net, "_fit", None)
        if not training or fit is None or fit.monitor is None or fit.record is None:
            return
        record = dict(fit.record)
        workers = record.pop("workers_ms")
        name = net.damper_.signal_name
        fit.monitor.update({
            **record, "update": fit.update_number(), "epoch": len(net.history),
            "epochs": len(net.history) - 1 + fit.epoch_rows / fit.session.n_rows,
            "loss": fit.stats.loss, "signal_name": name,
            "signal": record.get(name)}, workers=workers)

    def on_epoch_end(self, net, **kwargs):
        fit = getattr(net, "_fit", None)
        if fit is None or fit.monitor is None:
            return
        row = net.history[-1]
        # The page's epoch columns, and the lags of the epoch's scale-ups
        # (a list in the history; the monitor sends their count, mean and
        # longest).
        fit.monitor.epoch({key: row.get(key)
                           for key in (*EPOCH_COLUMNS, "scale_lags_s")})
