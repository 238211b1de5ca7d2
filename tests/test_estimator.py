"""The estimators behave as skorch and scikit-learn users expect."""
import pickle

import numpy as np
import torch
from dask.utils import key_split
from distributed import get_task_stream
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch.callbacks import (Checkpoint, EarlyStopping, EpochScoring,
                              LRScheduler, ProgressBar)
from skorch.dataset import ValidSplit

from helpers import make_classifier, weights

from dask_adadamp.dampers import AdaDamp


def test_skorch_validation_split_and_scoring(client, digits_data):
    X, X_test, y, y_test = digits_data
    # skorch's own default split for classifiers
    est = make_classifier(max_epochs=8, lr=0.1, optimizer__momentum=0.9,
                          batch_size=64, grads_per_worker=32,
                          train_split=ValidSplit(5, stratified=True)).fit(X, y)
    assert {"valid_loss", "valid_acc", "train_loss"} <= set(est.history[-1])
    # the training split only: 4/5 of the examples per epoch
    assert abs(est.history[0, "n_examples"] - 0.8 * len(X)) < 2
    assert est.score(X_test, y_test) > 0.9
    proba = est.predict_proba(X_test)
    assert proba.shape == (len(X_test), 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(est.predict(X_test), proba.argmax(axis=1))


def test_routing_and_initialize(client):
    est = make_classifier(module__hidden=7, optimizer=torch.optim.Adam,
                          optimizer__betas=(0.8, 0.9), criterion__label_smoothing=0.1)
    est.initialize()
    assert est.module_.layers[0].out_features == 7
    assert est.optimizer_.param_groups[0]["betas"] == (0.8, 0.9)
    assert est.criterion_.label_smoothing == 0.1
    # Same random_state, same initial weights.
    assert torch.equal(weights(est), weights(clone(est).initialize()))


def test_any_torch_optimizer_with_state_on_the_client(client, small_data):
    X, y = small_data
    est = make_classifier(optimizer=torch.optim.Adam, lr=0.01, max_epochs=3).fit(X, y)
    state = est.optimizer_.state_dict()["state"]
    assert state and all(s["step"] == 9 for s in state.values())
    assert est.score(X, y) > 0.8


def test_clone_pipeline_and_grid_search(client, small_data):
    X, y = small_data
    pipe = make_pipeline(StandardScaler(), make_classifier(max_epochs=10))
    grid = GridSearchCV(pipe, {"daskclassifier__lr": [0.01, 0.3],
                               "daskclassifier__module__hidden": [8, 32]},
                        cv=2, error_score="raise")
    grid.fit(X, y)
    assert len(grid.cv_results_["mean_test_score"]) == 4
    assert grid.best_score_ > 0.7
    assert grid.predict(X).shape == (len(X),)
    cloned = clone(make_classifier(client=client, grads_per_worker=17))
    assert cloned.client is client and cloned.grads_per_worker == 17


def test_pickle_fitted_estimator(client, small_data):
    X, y = small_data
    est = make_classifier(client=client).fit(X, y)
    restored = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(restored.predict_proba(X), est.predict_proba(X))
    assert restored.client is None  # a live client is not pickled
    assert restored.history[:, "model_updates"] == est.history[:, "model_updates"]
    restored.partial_fit(X, y)  # and it trains again on the current client
    assert restored.history[-1, "model_updates"] == 12


def test_save_and_load_params(client, small_data, tmp_path):
    X, y = small_data
    est = make_classifier().fit(X, y)
    est.save_params(f_params=tmp_path / "p.pt", f_optimizer=tmp_path / "o.pt",
                    f_history=tmp_path / "h.json")
    other = make_classifier(random_state=1).initialize()
    other.load_params(f_params=tmp_path / "p.pt", f_optimizer=tmp_path / "o.pt",
                      f_history=tmp_path / "h.json")
    assert torch.equal(weights(other), weights(est))
    assert other.history[:, "model_updates"] == est.history[:, "model_updates"]


def test_warm_start_and_partial_fit_continue(client, small_data):
    X, y = small_data
    est = make_classifier(warm_start=True, max_epochs=1, module__dropout=0.3)
    est.fit(X, y)
    est.fit(X, y)
    assert est.history[:, "model_updates"] == [3, 6]
    once = make_classifier(max_epochs=2, module__dropout=0.3).fit(X, y)
    # Two one-epoch fits are one two-epoch fit, update for update.
    assert torch.equal(weights(est), weights(once))
    est.set_params(warm_start=False)
    est.fit(X, y)
    assert est.history[:, "model_updates"] == [3]


def test_callbacks(client, small_data, tmp_path):
    X, y = small_data
    est = make_classifier(
        max_epochs=30, lr=0.1,
        train_split=ValidSplit(4),
        callbacks=[
            ("acc", EpochScoring("accuracy", on_train=False)),
            ("lr", LRScheduler(torch.optim.lr_scheduler.StepLR, step_size=1,
                               gamma=0.5)),
            ("stop", EarlyStopping(patience=2)),
            ("ckpt", Checkpoint(dirname=str(tmp_path), monitor="valid_loss_best")),
            ("progress", ProgressBar()),
        ])
    est.fit(X, y)
    assert len(est.history) < 30  # early stopping ended it
    lrs = est.history[:, "lr"]
    assert lrs[:3] == [0.1, 0.05, 0.025]  # the scheduler drives the update
    assert (tmp_path / "params.pt").exists()
    assert "accuracy" in est.history[-1]


def test_regressor(client):
    from dask_adadamp import DaskRegressor
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 4)).astype("float32")
    y = (X @ rng.normal(size=(4, 2))).astype("float32")
    est = DaskRegressor(torch.nn.Linear, module__in_features=4, module__out_features=2,
                        lr=0.1, batch_size=32, grads_per_worker=16, max_epochs=10,
                        random_state=0, verbose=0).fit(X, y)
    assert est.predict(X).shape == (256, 2)
    assert est.score(X, y) > 0.99


def test_task_stream_shows_placement_and_no_per_update_tasks(client, small_data):
    X, y = small_data
    with get_task_stream(client) as stream:
        est = make_classifier(batch_size=AdaDamp, batch_size__initial=32).fit(X, y)
    # The dashboard's task stream and progress bars group tasks by key_split:
    # the shards' placement shows; updates are direct calls, not tasks.
    names = [key_split(t["key"]) for t in stream.data]
    assert set(names) == {"adadamp-shard-X", "adadamp-shard-y"}
    n_shards = len(X) // 64 + 1  # shards of grads_per_worker rows
    assert len(names) == 2 * n_shards
    assert est.history[-1, "model_updates"] > len(names)
