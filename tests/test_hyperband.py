"""dask-ml's incremental searches run with dask-adadamp estimators through
:mod:`dask_adadamp.compat`."""
import dask
import dask.array as da
import numpy as np
import pytest
import torch
from dask_ml.model_selection import _incremental
from sklearn.datasets import make_classification

from dask_adadamp import DaskClassifier, compat
from dask_adadamp.models import MLP

ORIGINAL_DASK = _incremental.dask


def make_estimator(**kwargs):
    params = dict(module=MLP, module__n_features=20, module__n_classes=2,
                  module__hidden=8, criterion=torch.nn.CrossEntropyLoss,
                  lr=0.1, train_split=None, verbose=0, max_epochs=1,
                  batch_size=64, grads_per_worker=32, random_state=0)
    params.update(kwargs)
    return DaskClassifier(**params)


@pytest.fixture(scope="module")
def dask_data():
    X, y = make_classification(n_samples=1000, n_features=20, random_state=0)
    # One block per partial_fit call: 200 rows each.
    return (da.from_array(X.astype("float32"), chunks=200),
            da.from_array(y.astype("int64"), chunks=200))


def assert_restored():
    assert _incremental.dask is ORIGINAL_DASK


@pytest.mark.timeout(120)
def test_hyperband_with_dask_arrays(client, dask_data):
    X, y = dask_data
    search = compat.HyperbandSearchCV(
        make_estimator(), {"lr": [1e-4, 0.3], "module__hidden": [8, 32]},
        max_iter=9, random_state=0)
    search.fit(X, y)  # a hang (a fit waiting for a thread) hits the timeout
    assert_restored()

    scores = search.cv_results_["test_score"]
    assert len(scores) > 4  # several brackets, several models each
    assert search.best_score_ == scores.max()
    assert search.best_score_ > scores.min()
    # lr=1e-4 barely moves in one epoch per call; lr=0.3 learns.
    assert search.best_params_["lr"] == 0.3
    assert search.best_score_ > 0.8

    X_new = X[:50].compute()
    predicted = search.best_estimator_.predict(X_new)
    assert predicted.shape == (50,)
    assert set(np.unique(predicted)) <= {0, 1}
    # The search predicts with its best estimator, dask arrays included.
    assert search.predict(X[:50]).compute().shape == (50,)


def test_incremental_search(client, dask_data):
    X, y = dask_data
    search = compat.IncrementalSearchCV(
        make_estimator(), {"lr": [1e-4, 0.3]}, n_initial_parameters=2,
        max_iter=3, decay_rate=None, random_state=0).fit(X, y)
    assert_restored()
    assert search.best_params_["lr"] == 0.3
    assert search.best_score_ > search.cv_results_["test_score"].min()


def test_failing_search_restores_dask_ml(client, dask_data):
    X, y = dask_data
    # The module expects 7 features, the data have 20: partial_fit fails.
    search = compat.HyperbandSearchCV(
        make_estimator(module__n_features=7), {"lr": [0.1, 0.3]},
        max_iter=3, random_state=0)
    with pytest.raises(ValueError, match="does not fit the module"):
        search.fit(X, y)
    assert_restored()


def test_swap_is_scoped_and_nests():
    with compat.dask_ml_fixed():
        assert _incremental.dask is not ORIGINAL_DASK
        assert _incremental.dask.persist is compat.persist
        # Everything else is the real dask.
        assert _incremental.dask.delayed is dask.delayed
        with compat.dask_ml_fixed():
            assert _incremental.dask.persist is compat.persist
        # the outer block still holds the swap
        assert _incremental.dask.persist is compat.persist
    assert_restored()

    with pytest.raises(ZeroDivisionError):
        with compat.dask_ml_fixed():
            1 / 0
    assert_restored()

    compat.patch_dask_ml()
    compat.patch_dask_ml()  # idempotent
    try:
        assert _incremental.dask.persist is compat.persist
    finally:
        compat.unpatch_dask_ml()
    assert_restored()


def test_persist_outside_the_event_loop_is_dask_persist(client):
    # Outside the client's loop the shim leaves the work to dask.persist.
    x = da.arange(10, chunks=5)
    (y,) = compat.persist(x)
    np.testing.assert_array_equal(y.compute(), np.arange(10))
