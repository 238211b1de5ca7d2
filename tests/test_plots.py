"""plot_history on hand-built histories: no cluster needed."""
import matplotlib

# Headless: no display on CI; set before pyplot is imported.
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from dask_adadamp import DaskClassifier  # noqa: E402
from dask_adadamp.models import MLP  # noqa: E402
from dask_adadamp.plots import PANELS, plot_history  # noqa: E402


def make_history(score="valid_acc", signal="loss_ratio"):
    """Three epochs of a growing batch size, as the estimators record them:
    per-update records in "batches" (plus a skorch validation batch, which
    is no update), cumulative counts per epoch."""
    sizes = [[32, 32, 32, 32], [64, 64, 64], [128, 128]]
    history, updates, examples = [], 0, 0
    for i, epoch_sizes in enumerate(sizes):
        batches = []
        for j, b in enumerate(epoch_sizes):
            row = {"train_loss": 2.0 / (1 + i + j / 4), "train_batch_size": b,
                   "batch_size": b, "lr": 0.1 / (1 + i), "n_workers": 1 + i}
            if signal:
                row[signal] = 1.0 + 0.1 * (updates + j)
            batches.append(row)
        batches.append({"valid_loss": 1.0 / (1 + i), "valid_batch_size": 100})
        updates += len(epoch_sizes)
        examples += sum(epoch_sizes)
        epoch = {"epoch": i + 1, "dur": 1.0 + i, "train_loss": 1.5 / (1 + i),
                 "valid_loss": 1.0 / (1 + i), "batch_size": max(epoch_sizes),
                 "lr": 0.1 / (1 + i), "model_updates": updates,
                 "n_examples": examples, "n_workers": 1 + i,
                 "batches": batches}
        if score:
            epoch[score] = 0.5 + 0.1 * i
        if signal:
            epoch[signal] = batches[-2][signal]
        history.append(epoch)
    return history


def panel(fig, name):
    (ax,) = [ax for ax in fig.axes if ax.get_label() == name]
    return ax


def line(ax, key):
    (found,) = [ln for ln in ax.get_lines() if ln.get_label() == key]
    return found.get_xdata().tolist(), found.get_ydata().tolist()


def col(rows, key):
    return [r[key] for r in rows if key in r]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_panels_labels_and_data(tmp_path):
    history = make_history()
    fig = plot_history(history)
    # Six panels plus the twins of the four with a right-hand y axis.
    assert [ax.get_label() for ax in fig.axes] == list(PANELS) + [
        f"{name}:right" for name in PANELS if name != "signal_updates"]

    epochs = col(history, "epoch")
    updates = [b for e in history for b in e["batches"] if "batch_size" in b]
    n = list(range(1, len(updates) + 1))

    ax = panel(fig, "schedule_epochs")
    assert ax.get_title() == "Batch size and learning rate per epoch"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("epoch", "batch_size")
    assert line(ax, "batch_size") == (epochs, [32, 64, 128])
    right = panel(fig, "schedule_epochs:right")
    assert right.get_ylabel() == "lr"
    assert line(right, "lr") == (epochs, col(history, "lr"))

    ax = panel(fig, "schedule_updates")
    assert ax.get_xlabel() == "model updates"
    # The validation batches are no updates: 4 + 3 + 2 of them.
    assert line(ax, "batch_size") == (n, [32] * 4 + [64] * 3 + [128] * 2)
    assert line(panel(fig, "schedule_updates:right"), "lr") == (
        n, col(updates, "lr"))

    ax = panel(fig, "signal_updates")
    assert ax.get_visible() and ax.get_ylabel() == "loss_ratio"
    assert line(ax, "loss_ratio") == (n, col(updates, "loss_ratio"))

    wall_clock = np.cumsum(col(history, "dur")).tolist()
    assert wall_clock == [1.0, 3.0, 6.0]
    for name, x, xlabel in [
            ("loss_epochs", epochs, "epoch"),
            ("loss_updates", [4, 7, 9], "model updates"),
            ("loss_time", wall_clock, "wall-clock time (s)")]:
        ax = panel(fig, name)
        assert ax.get_xlabel() == xlabel
        assert ax.get_title().startswith("Loss and valid_acc against")
        assert ax.get_ylabel() == "train_loss / valid_loss"
        assert line(ax, "train_loss") == (x, col(history, "train_loss"))
        assert line(ax, "valid_loss") == (x, col(history, "valid_loss"))
        right = panel(fig, f"{name}:right")
        assert right.get_ylabel() == "valid_acc"
        assert line(right, "valid_acc") == (x, col(history, "valid_acc"))
        # One legend for the lines of both y axes, on the upper (twin) one.
        assert [t.get_text() for t in right.get_legend().get_texts()] == [
            "train_loss", "valid_loss", "valid_acc"]

    path = tmp_path / "history.png"
    fig.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_test_key_selection():
    # Default: valid_acc before test_acc.
    history = make_history()
    for e in history:
        e["test_acc"] = 0.9
    fig = plot_history(history)
    assert panel(fig, "loss_epochs:right").get_ylabel() == "valid_acc"

    fig = plot_history(history, test_key="test_acc")
    right = panel(fig, "loss_updates:right")
    assert right.get_ylabel() == "test_acc"
    assert line(right, "test_acc") == ([4, 7, 9], [0.9] * 3)

    # test_acc is the default without valid_acc.
    fig = plot_history(make_history(score="test_acc"))
    assert panel(fig, "loss_time:right").get_ylabel() == "test_acc"

    # A loss as the score: not drawn twice.
    fig = plot_history(make_history(), test_key="valid_loss")
    assert [ln.get_label() for ln in panel(fig, "loss_epochs").get_lines()] \
        == ["train_loss"]
    assert panel(fig, "loss_epochs:right").get_ylabel() == "valid_loss"


def test_no_score_no_signal_sparse_score():
    history = make_history(score=None, signal=None)
    fig = plot_history(history)
    ax = panel(fig, "loss_epochs")
    assert ax.get_title() == "Loss against epochs"
    assert not any(a.get_label() == "loss_epochs:right" for a in fig.axes)
    assert not panel(fig, "signal_updates").get_visible()

    # A score recorded in some epochs only: its points, not NaN gaps.
    history = make_history(score="test_acc", signal="noise_scale")
    del history[1]["test_acc"]
    fig = plot_history(history)
    assert line(panel(fig, "loss_epochs:right"), "test_acc") == (
        [1, 3], [0.5, 0.7])
    assert panel(fig, "signal_updates").get_ylabel() == "noise_scale"


def test_user_axes_and_estimator():
    fig, axes = plt.subplots(2, 3)
    est = DaskClassifier(MLP, module__n_features=4,
                         criterion=torch.nn.CrossEntropyLoss)
    est.initialize()
    # A fitted estimator's history, as fit leaves it.
    for epoch in make_history():
        est.history.new_epoch()
        for key, value in epoch.items():
            est.history.record(key, value)
    assert plot_history(est, axes=axes) is fig
    assert [ax.get_label() for ax in axes.ravel()] == list(PANELS)
    assert line(axes[0, 0], "batch_size")[1] == [32, 64, 128]

    with pytest.raises(ValueError, match="6 Axes"):
        plot_history(make_history(), axes=axes[0])


def test_errors():
    est = DaskClassifier(MLP, module__n_features=4,
                         criterion=torch.nn.CrossEntropyLoss)
    with pytest.raises(ValueError, match="DaskClassifier has no history.*fit"):
        plot_history(est)
    est.initialize()
    with pytest.raises(ValueError, match="history is empty"):
        plot_history(est)
    with pytest.raises(ValueError, match="history is empty"):
        plot_history([])
    with pytest.raises(ValueError, match="'train_loss'"):
        plot_history([{"epoch": 1, "dur": 1.0}])
    with pytest.raises(ValueError, match="test_key='test_acc'.*valid_acc"):
        plot_history(make_history(), test_key="test_acc")


def test_plot_predicted_draws_measured_and_predicted_time():
    from dask_adadamp import plot_predicted
    from dask_adadamp.simulate import Cluster

    history = [{"batches": [
        {"batch_size": 64, "worker_s": 0.02, "workers_present": 1},
        {"batch_size": 128, "worker_s": 0.06, "workers_present": 2},
        {"batch_size": 128, "worker_s": 0.04, "workers_present": 2}]}]
    cluster = Cluster(grad_time="100 us", grads_per_worker=64)
    fig = plot_predicted(history, cluster, n_params=1000)
    measured, predicted = fig.axes[0].get_lines()
    assert measured.get_label() == "measured"
    np.testing.assert_allclose(measured.get_ydata(), [0.02, 0.05, 0.07])
    # 64 examples x 100 us, then two chunks of 64 at once: 6.4 ms each.
    assert predicted.get_ydata()[0] >= 0.0064
    plt.close(fig)


def test_plot_predicted_needs_the_resource_bill():
    from dask_adadamp import plot_predicted
    from dask_adadamp.simulate import Cluster

    with pytest.raises(ValueError, match="records 'worker_s'"):
        plot_predicted([{"batches": [{"batch_size": 64}]}],
                       Cluster(grad_time="1 ms", grads_per_worker=64), n_params=10)
