"""Figures of a fit's history, as in the AdaDamp papers.

Matplotlib is imported when :func:`plot_history` or :func:`plot_predicted`
is called, so that the package itself does not depend on it.
"""
import numbers

import numpy as np

from ._history import epochs as history_epochs, update_rows

__all__ = ["plot_history", "plot_predicted"]

#: The labels (``Axes.get_label()``) of the six panels, in the order of the
#: ``axes`` argument of :func:`plot_history`. A panel's right-hand y axis,
#: where it has one, is labelled ``"<panel>:right"``.
PANELS = ("schedule_epochs", "schedule_updates", "signal_updates",
          "loss_epochs", "loss_updates", "loss_time")

#: Schedule signals a damper may record, in the order they are looked for.
SIGNALS = ("loss_ratio", "noise_scale")

#: Scores looked for when ``test_key`` is None, in this order.
DEFAULT_SCORES = ("valid_acc", "test_acc")


def plot_history(est_or_history, *, test_key=None, axes=None):
    """Plot the batch-size schedule and the training curves of a fit.

    Draws the figures of the AdaDamp papers from a fitted estimator's skorch
    history, in six panels (a 2 x 3 grid unless ``axes`` is given):

    ``schedule_epochs``
        Batch size (left y axis; the epoch's largest) and learning rate
        (right y axis; the epoch's last) against epochs.
    ``schedule_updates``
        The same for every model update, from the epochs' ``"batches"``.
    ``signal_updates``
        The schedule's signal (``"loss_ratio"`` or ``"noise_scale"``)
        against model updates; hidden when the history records none.
    ``loss_epochs``, ``loss_updates``, ``loss_time``
        Training loss (and ``"valid_loss"`` when recorded) on the left y
        axis and the score ``test_key`` on the right y axis, against
        epochs, cumulative model updates and wall-clock time (the
        cumulative sum of the epochs' ``"dur"``, in seconds).

    Every curve is a line labelled with its history key (``"batch_size"``,
    ``"lr"``, ``"train_loss"``, ...). Every panel is labelled with its name
    above (``Axes.get_label()``), its right-hand twin with
    ``"<name>:right"``. Points where the history lacks a value (a score
    recorded every few epochs, an interrupted last epoch) are left out.

    Parameters
    ----------
    est_or_history : estimator or list of dict
        A fitted :class:`~dask_adadamp.DaskClassifier` or
        :class:`~dask_adadamp.DaskRegressor` (any skorch net), or its
        ``history``: a list of epoch dicts (``history.to_list()`` or a
        list loaded from JSON will do).
    test_key : str or None (default=None)
        The epoch key plotted as the score. None: ``"valid_acc"`` if any
        epoch has it, else ``"test_acc"`` if any has it, else no score.
    axes : sequence of 6 matplotlib Axes or None (default=None)
        Axes to draw into, in the order listed above (any shape; it is
        flattened, so ``plt.subplots(2, 3)[1]`` will do). None: a new
        figure of 2 x 3 panels.

    Returns
    -------
    matplotlib.figure.Figure
        The figure of the panels (that of ``axes[0]`` when ``axes`` is
        given).

    Raises
    ------
    ValueError
        If the estimator is not fitted, the history is empty or records no
        ``"train_loss"``, ``test_key`` is not in any epoch, or ``axes`` does
        not hold six Axes.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from dask_adadamp.plots import PANELS, plot_history
    >>> history = [
    ...     {"epoch": 1, "dur": 2.0, "train_loss": 1.2, "valid_acc": 0.6,
    ...      "batch_size": 64, "lr": 0.1, "model_updates": 2,
    ...      "n_examples": 128, "n_workers": 1,
    ...      "batches": [{"train_loss": 1.5, "batch_size": 64, "lr": 0.1},
    ...                  {"train_loss": 1.1, "batch_size": 64, "lr": 0.1}]},
    ...     {"epoch": 2, "dur": 1.5, "train_loss": 0.7, "valid_acc": 0.8,
    ...      "batch_size": 128, "lr": 0.1, "model_updates": 3,
    ...      "n_examples": 256, "n_workers": 2,
    ...      "batches": [{"train_loss": 0.7, "batch_size": 128, "lr": 0.1}]},
    ... ]
    >>> fig = plot_history(history)
    >>> ax = fig.axes[PANELS.index("loss_time")]
    >>> ax.get_xlabel()
    'wall-clock time (s)'
    >>> ax.get_lines()[0].get_xdata().tolist()  # cumulative "dur"
    [2.0, 3.5]
    >>> fig.savefig("history.png")  # doctest: +SKIP
    """
    # Imported here: plotting is optional, the package must not need it.
    import matplotlib.pyplot as plt

    epochs = _epochs(est_or_history)
    score = _score_key(epochs, test_key)
    if axes is None:
        fig, grid = plt.subplots(2, 3, figsize=(15, 8), layout="constrained")
        axes = grid.ravel()
    else:
        axes = np.ravel(np.asarray(axes, dtype=object))
        if len(axes) != len(PANELS):
            raise ValueError(
                f"axes must hold {len(PANELS)} Axes (the panels "
                f"{', '.join(PANELS)}), not {len(axes)}")
        fig = axes[0].figure
    panels = dict(zip(PANELS, axes))
    for name, ax in panels.items():
        ax.set_label(name)

    updates = update_rows(epochs)
    update_number = np.arange(1, len(updates) + 1, dtype=float)
    epoch_number = _column(epochs, "epoch")
    # Wall-clock at the end of each epoch; a missing "dur" (an interrupted
    # epoch) makes it and every later time unknown (NaN), so left out.
    wall_clock = np.cumsum(_column(epochs, "dur"))

    _pair(panels["schedule_epochs"], epoch_number, epochs,
          "batch_size", "lr", xlabel="epoch",
          title="Batch size and learning rate per epoch")
    _pair(panels["schedule_updates"], update_number, updates,
          "batch_size", "lr", xlabel="model updates",
          title="Batch size and learning rate per model update")
    _signal(panels["signal_updates"], update_number, updates)

    losses = ["train_loss"]
    if score != "valid_loss" and any("valid_loss" in e for e in epochs):
        losses.append("valid_loss")
    for name, x, xlabel, what in [
            ("loss_epochs", epoch_number, "epoch", "epochs"),
            ("loss_updates", _column(epochs, "model_updates"),
             "model updates", "model updates"),
            ("loss_time", wall_clock, "wall-clock time (s)",
             "wall-clock time")]:
        _pair(panels[name], x, epochs, losses, score, xlabel=xlabel,
              title=f"Loss{' and ' + score if score else ''} against {what}")
    return fig


def plot_predicted(est_or_history, cluster, n_params, *, ax=None):
    """Plot a fit's measured wall-clock time against the simulator's.

    Both cumulative over the fit's model updates: *measured*, each update's
    seconds from the end of the previous one (``worker_s /
    workers_present``, as the history's resource bill records it);
    *predicted*, :func:`dask_adadamp.simulate.update_seconds` of the same
    batch sizes on ``cluster``. With ``cluster =
    Cluster.from_history(net)`` it shows how well the calibration fits the
    fit it came from; with another cluster, what the same updates would
    have taken there.

    Parameters
    ----------
    est_or_history : estimator or list of dict
        A fitted Dask net or its history (as for :func:`plot_history`).
    cluster : dask_adadamp.simulate.Cluster
    n_params : int
        The model's parameters.
    ax : matplotlib Axes or None
        Where to draw; None: a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        Its axes hold the lines ``"measured"`` and ``"predicted"``.

    Raises
    ------
    ValueError
        If the history records no update's ``worker_s``.

    Examples
    --------
    >>> from dask_adadamp.simulate import Cluster
    >>> history = [{"batches": [
    ...     {"batch_size": 64, "worker_s": 0.02, "workers_present": 1},
    ...     {"batch_size": 128, "worker_s": 0.05, "workers_present": 2}]}]
    >>> cluster = Cluster(grad_time="100 us", grads_per_worker=64)
    >>> fig = plot_predicted(history, cluster, n_params=1000)
    >>> [line.get_label() for line in fig.axes[0].get_lines()]
    ['measured', 'predicted']
    """
    import matplotlib.pyplot as plt

    from .simulate import update_seconds

    rows = [r for r in update_rows(history_epochs(est_or_history))
            if r.get("worker_s") is not None and r.get("workers_present")]
    if not rows:
        raise ValueError(
            "no update of the history records 'worker_s' and 'workers_present' "
            "(the resource bill of a dask-adadamp fit); fit with this version "
            "of dask-adadamp, or pass that fit's estimator or history")
    measured = np.cumsum([r["worker_s"] / r["workers_present"] for r in rows])
    predicted = np.cumsum(update_seconds([r["batch_size"] for r in rows], n_params,
                                         cluster))
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    number = np.arange(1, len(rows) + 1)
    ax.plot(number, measured, label="measured")
    ax.plot(number, predicted, label="predicted", linestyle="--")
    ax.set(xlabel="model updates", ylabel="wall-clock time (s)",
           title=f"measured {measured[-1]:.1f} s, predicted {predicted[-1]:.1f} s")
    ax.legend()
    return ax.figure


def _epochs(est_or_history):
    """The list of epoch dicts, or a ValueError saying what is missing."""
    epochs = history_epochs(est_or_history)
    if not epochs:
        raise ValueError(
            "the history is empty (no epochs): fit the estimator first, "
            "with max_epochs >= 1")
    if not any("train_loss" in e for e in epochs):
        raise ValueError(
            "no epoch of the history records 'train_loss'; it has the keys "
            f"{sorted(set().union(*epochs))}")
    return epochs


def _score_key(epochs, test_key):
    keys = set().union(*epochs)
    if test_key is None:
        return next((k for k in DEFAULT_SCORES if k in keys), None)
    if test_key not in keys:
        raise ValueError(
            f"test_key={test_key!r} is in no epoch of the history; it has "
            f"the keys {sorted(k for k in keys if k != 'batches')}")
    return test_key


def _column(rows, key):
    """``rows[i][key]`` as floats, NaN where a row lacks it (or it is not a
    number), so that x and y stay aligned row by row."""
    return np.array([float(r[key]) if isinstance(r.get(key), numbers.Real)
                     else np.nan for r in rows], dtype=float)


def _plot(ax, x, rows, key, **kwargs):
    y = _column(rows, key)
    # Missing points are dropped rather than plotted as NaN: a score
    # recorded every few epochs would otherwise show as isolated markers.
    keep = np.isfinite(x) & np.isfinite(y)
    # Few points per epoch, many per update: markers only where they help.
    marker = "o" if keep.sum() <= 50 else None
    return ax.plot(x[keep], y[keep], label=key, marker=marker, **kwargs)


def _pair(ax, x, rows, left, right, *, xlabel, title):
    """``left`` key(s) on ``ax``, ``right`` on a twin y axis, one legend."""
    left = [left] if isinstance(left, str) else left
    from matplotlib.ticker import MaxNLocator

    lines = []
    for i, key in enumerate(left):
        # Validation loss dashed in the colour of the left axis, so the
        # right axis keeps a colour of its own.
        lines += _plot(ax, x, rows, key, color="C0",
                       linestyle="-" if i == 0 else "--")
    ax.set_ylabel(" / ".join(left), color="C0")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if right is not None:
        twin = ax.twinx()
        twin.set_label(f"{ax.get_label()}:right")
        lines += _plot(twin, x, rows, right, color="C1")
        twin.set_ylabel(right, color="C1")
    if not any(len(line.get_xdata()) for line in lines):
        # Say why a panel is blank (a plain skorch history, say, has no
        # "model_updates" and no per-update "batch_size").
        ax.text(0.5, 0.5, f"no {xlabel} / {' / '.join(left)} recorded",
                transform=ax.transAxes, ha="center", va="center")
    if xlabel in ("epoch", "model updates"):
        # Counts: no ticks at 1.5 epochs.
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    # On the twin when there is one: it is drawn above ``ax`` and would
    # hide a legend of ``ax``.
    (twin if right is not None else ax).legend(
        lines, [line.get_label() for line in lines], loc="best")


def _signal(ax, update_number, updates):
    from matplotlib.ticker import MaxNLocator

    key = next((k for k in SIGNALS if any(k in b for b in updates)), None)
    if key is None:
        # Constant batch sizes and schedules without a signal record none.
        ax.set_visible(False)
        return
    _plot(ax, update_number, updates, key, color="C2")
    ax.set_xlabel("model updates")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(key)
    ax.set_title(f"Schedule signal ({key}) per model update")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
