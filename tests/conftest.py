"""Shared fixtures: real multi-process Dask clusters and small seeded data."""
import time

import numpy as np
import pytest
import torch
from distributed import Client, LocalCluster

from dask_adadamp import DaskClassifier
from dask_adadamp.datasets import digits
from dask_adadamp.models import MLP


def pytest_collection_modifyitems(config, items):
    # Tests marked slow (minutes) run only when -m selects them: `-m slow`.
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: select with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def make_cluster(n_workers):
    return LocalCluster(n_workers=n_workers, threads_per_worker=1,
                        processes=True, dashboard_address=":0",
                        silence_logs=40)


@pytest.fixture(scope="session")
def cluster():
    with make_cluster(2) as cluster:
        yield cluster


@pytest.fixture
def client(cluster):
    with Client(cluster) as client:
        yield client
        # Whatever a test's fits placed must be gone when they return.
        assert adadamp_keys(client) == []


def adadamp_keys(client, timeout=10):
    """Keys of dask-adadamp left on the scheduler once released keys are
    forgotten (the client tells the scheduler asynchronously)."""
    def keys(dask_scheduler):
        return [k for k in dask_scheduler.tasks if "adadamp" in str(k)]

    deadline = time.monotonic() + timeout
    while (left := client.run_on_scheduler(keys)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.fixture(scope="session")
def digits_data():
    return digits(random_state=0)


def make_classifier(**kwargs):
    params = dict(module=MLP, module__n_features=64, module__hidden=32,
                  criterion=torch.nn.CrossEntropyLoss, lr=0.1,
                  batch_size=128, grads_per_worker=64, max_epochs=2,
                  train_split=None, random_state=0, verbose=0)
    params.update(kwargs)
    return DaskClassifier(**params)


def weights(est):
    return torch.nn.utils.parameters_to_vector(
        est.module_.parameters()).detach().clone()


@pytest.fixture
def small_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 64)).astype("float32")
    y = (X[:, :10].sum(axis=1) > 0).astype("int64")
    return X, y
