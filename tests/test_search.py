"""Searches and progress output: scikit-learn's searches in parallel on the
cluster (joblib's Dask backend), skorch's epoch table and progress bars."""
import joblib
import numpy as np
import pytest
from helpers import make_classifier, weights
from scipy.stats import loguniform
from skorch.callbacks import ProgressBar as SkorchProgressBar
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV

from dask_adadamp import ProgressBar
from dask_adadamp.dampers import GeoDamp

GRID = {"lr": [0.05, 0.2], "batch_size__factor": [1, 2],
        "module__hidden": [16, 32]}


def geodamp_classifier(**kwargs):
    return make_classifier(batch_size=GeoDamp, batch_size__initial=32,
                           batch_size__delay=1, max_epochs=3, **kwargs)


def test_grid_search_in_parallel_on_the_cluster_equals_sequential(client, small_data):
    X, y = small_data
    sequential = GridSearchCV(geodamp_classifier(), GRID, cv=2,
                              error_score="raise").fit(X, y)
    # Each fit runs in a task on a worker and trains from there with the
    # same cluster's workers: it secedes while it waits, or the two 1-thread
    # workers would wait on each other forever.
    with joblib.parallel_backend("dask"):
        parallel = GridSearchCV(geodamp_classifier(), GRID, cv=2, n_jobs=2,
                                error_score="raise").fit(X, y)
    # Seeded fits are exact: any mixing of two fits' data or tasks would
    # change a score.
    np.testing.assert_array_equal(parallel.cv_results_["mean_test_score"],
                                  sequential.cv_results_["mean_test_score"])
    assert len(set(sequential.cv_results_["mean_test_score"])) > 1
    assert parallel.best_params_ == sequential.best_params_
    # The refit best estimator is the same model, and it is usable here.
    assert parallel.best_estimator_.damper_.factor == parallel.best_params_[
        "batch_size__factor"]
    assert weights(parallel.best_estimator_).equal(weights(sequential.best_estimator_))


def test_randomized_search_over_schedule_parameters(client, small_data):
    X, y = small_data
    search = RandomizedSearchCV(
        geodamp_classifier(),
        {"lr": loguniform(1e-3, 0.3), "batch_size__initial": [16, 32, 64]},
        n_iter=3, cv=2, random_state=0, error_score="raise").fit(X, y)
    for params, est_params in zip(search.cv_results_["params"],
                                  search.cv_results_["param_batch_size__initial"]):
        assert params["batch_size__initial"] == est_params
    assert search.best_estimator_.damper_.initial == search.best_params_[
        "batch_size__initial"]


def test_epoch_table_shows_the_schedule(client, small_data, capsys):
    X, y = small_data
    est = geodamp_classifier(verbose=1).fit(X, y)
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header[:2] == ["epoch", "batch_size"]
    assert {"lr", "model_updates", "n_examples", "n_workers", "train_loss"} <= set(header)
    column = header.index("batch_size")
    printed = [int(line.split()[column]) for line in lines[2:]]
    assert printed == [32, 64, 128] == est.history[:, "batch_size"]


class RecordingBar(ProgressBar):
    """Remembers what the bar counted and showed when each epoch ended."""

    def on_epoch_end(self, net, **kwargs):
        self.seen = [*getattr(self, "seen", []), (self.pbar_.n, self.pbar_.total,
                                                  self.pbar_.postfix)]
        super().on_epoch_end(net, **kwargs)


def test_progress_bar_counts_examples(client, small_data, capsys):
    X, y = small_data
    bar = RecordingBar()
    est = geodamp_classifier(callbacks=[bar]).fit(X, y)
    bar = dict(est.callbacks_)["RecordingBar"]  # skorch initializes a clone
    # All 300 rows each epoch, in 10, 5 and 3 updates.
    assert [(n, total) for n, total, _ in bar.seen] == [(300, 300)] * 3
    # The last update of epoch 3 takes the 44 rows left after 2 x 128.
    assert "batch_size=44" in bar.seen[-1][2] and "n_workers=" in bar.seen[-1][2]
    assert "examples/s" in capsys.readouterr().err


def test_skorch_progress_bar(client, small_data, capsys):
    X, y = small_data
    make_classifier(callbacks=[SkorchProgressBar()]).fit(X, y)
    # 300 rows in batches of 128: a bar of 3 steps.
    assert "0/3 " in capsys.readouterr().err
    with pytest.raises(ValueError, match="dask_adadamp.ProgressBar"):
        geodamp_classifier(callbacks=[SkorchProgressBar()]).fit(X, y)
    # Counting the previous epoch's batches works with any schedule.
    geodamp_classifier(callbacks=[SkorchProgressBar(batches_per_epoch="count")]).fit(X, y)
