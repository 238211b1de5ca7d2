"""The cluster follows the batch size: min_workers / max_workers."""
import math
import os
import time

import numpy as np
import pytest
import torch
from distributed import Client
from skorch.callbacks import Callback

from conftest import adadamp_keys, make_classifier, make_cluster, weights
from dask_adadamp.dampers import GeoDamp


def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 64)).astype("float32")
    return X, (X[:, :10].sum(axis=1) > 0).astype("int64")


def growing(**kwargs):
    # batch 32, 64, 128, 256: 1, 2, 4 (capped at 3) workers of 32 examples
    return make_classifier(batch_size=GeoDamp(initial=32, factor=2, delay=1),
                           grads_per_worker=32, max_epochs=5, **kwargs)


class WaitForWorkers(Callback):
    """The fit does not wait for the workers it asks for (by design); the
    test does, so that the later updates see them. Records the cluster's
    size after every update."""

    def __init__(self, client, most):
        self.client, self.most, self.seen = client, most, []

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            want = min(self.most, math.ceil(net.history[-1, "batches", -1, "batch_size"] / 32))
            self.client.wait_for_workers(want, timeout=60)
            self.seen.append(len(self.client.scheduler_info()["workers"]))


def wait_until(condition, timeout=30):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


@pytest.fixture
def reference():
    """The same fit on a fixed 3-worker cluster."""
    X, y = data()
    with make_cluster(3) as cluster, Client(cluster) as client:
        return weights(growing(client=client).fit(X, y))


def test_cluster_grows_with_the_batch_and_is_given_back(reference):
    X, y = data()
    with make_cluster(1) as cluster, Client(cluster) as client:
        watch = WaitForWorkers(client, 3)
        est = growing(client=client, max_workers=3, callbacks=[("watch", watch)]).fit(X, y)
        used = [b["n_workers"] for epoch in est.history for b in epoch["batches"]]
        # one worker while the batch is 32, then 2, then all 3
        assert used[0] == 1 and 2 in used and used[-1] == 3
        assert max(watch.seen) == 3 and est.history[-1, "n_workers"] == 3
        torch.testing.assert_close(weights(est), reference, rtol=0, atol=0)
        # given back at the size it was found, with nothing of the fit left
        assert len(cluster.worker_spec) == 1
        assert wait_until(lambda: len(client.scheduler_info()["workers"]) == 1)
        assert adadamp_keys(client) == []


class Disturb(Callback):
    """Retire one worker, later kill another, between updates."""

    def __init__(self, client):
        self.client, self.updates = client, 0

    def on_batch_end(self, net, training=False, **kwargs):
        if not training:
            return
        self.updates += 1
        workers = sorted(self.client.scheduler_info()["workers"])
        if self.updates == 40 and len(workers) > 1:
            self.client.retire_workers(workers=[workers[-1]])
        if self.updates == 45 and len(workers) > 1:
            self.client.run(os._exit, 1, workers=[workers[0]])


def test_retired_and_killed_workers_lose_no_data(reference):
    X, y = data()
    with make_cluster(1) as cluster, Client(cluster) as client:
        est = growing(client=client, max_workers=3, callbacks=[
            ("watch", WaitForWorkers(client, 3)), ("disturb", Disturb(client))])
        # WaitForWorkers must not wait for the workers taken away
        est.callbacks[0][1].most = 1
        est.fit(X, y)
        torch.testing.assert_close(weights(est), reference, rtol=0, atol=0)
        assert adadamp_keys(client) == []


def test_without_a_cluster_manager_it_trains_on_the_workers_there_are(cluster, small_data):
    X, y = small_data
    with Client(cluster.scheduler_address) as client:
        assert client.cluster is None
        with pytest.warns(UserWarning, match="training on the 2 workers that exist"):
            est = make_classifier(client=client, max_workers=4).fit(X, y)
        assert est.history[-1, "n_workers"] == 2
        assert len(cluster.workers) == 2


@pytest.mark.parametrize("params, message", [
    ({"min_workers": 0}, "min_workers=0 is not accepted"),
    ({"max_workers": 2.5}, "max_workers=2.5 is not accepted"),
    ({"min_workers": 3, "max_workers": 2}, "min_workers=3 is more than max_workers=2"),
])
def test_bad_worker_bounds(client, small_data, params, message):
    X, y = small_data
    with pytest.raises(ValueError, match=message):
        make_classifier(**params).fit(X, y)
