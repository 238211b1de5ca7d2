"""The cluster follows the batch size: min_workers / max_workers."""
import math
import time

import numpy as np
import pytest
import torch
from distributed import Client
from skorch.callbacks import Callback

from dask_adadamp.dampers import GeoDamp
from helpers import DiesOnCue, adadamp_keys, make_classifier, weights


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


@pytest.fixture(scope="module")
def reference(shared_cluster):
    """The same fit on a fixed cluster of 3 worker processes."""
    X, y = data()
    with Client(shared_cluster(3)) as client:
        return weights(growing(client=client).fit(X, y))


def test_cluster_grows_with_the_batch_and_is_given_back(reference, new_cluster):
    X, y = data()
    # In-process workers: growing and giving back is the cluster manager's
    # scaling, the same for processes (which the next test uses).
    cluster = new_cluster(1)
    with Client(cluster) as client:
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
    """Retire one worker between updates 25 and 26; lay the cue that makes
    a worker die inside its compute of update 32 (the fit has 39)."""

    def __init__(self, client, cue, watch):
        self.client, self.cue, self.watch, self.updates = client, cue, watch, 0
        self.retired, self.seen = None, {}

    def on_batch_begin(self, net, training=False, **kwargs):
        if not training:
            return
        self.updates += 1
        workers = sorted(self.client.scheduler_info()["workers"])
        self.seen[self.updates] = workers
        if self.updates == 26:
            self.watch.most = 1  # do not wait for the workers taken away
            self.retired = workers[-1]
            self.client.retire_workers(workers=[self.retired])
        if self.updates == 32:
            self.cue.touch()


def test_retired_and_killed_workers_lose_no_data(reference, tmp_path, new_cluster,
                                                 by_value):
    X, y = data()
    cue = tmp_path / "die"
    # Worker processes: one of them is killed.
    with Client(new_cluster(1, processes=True)) as client:
        watch = WaitForWorkers(client, 3)
        disturb = Disturb(client, cue, watch)
        est = growing(client=client, max_workers=3, module=DiesOnCue,
                      module__cue=str(cue), callbacks=[
                          ("watch", watch), ("disturb", disturb)])
        est.fit(X, y)
        assert adadamp_keys(client) == []
    # Both happened: the retired worker was gone by the next update, and a
    # worker died inside update 32, which needed a second round of calls.
    assert disturb.retired in disturb.seen[26] and disturb.retired not in disturb.seen[27]
    assert not cue.exists()
    rounds = [b["rounds"] for epoch in est.history for b in epoch["batches"]]
    assert len(rounds) == 39 and rounds[31] == 2
    torch.testing.assert_close(weights(est), reference, rtol=0, atol=0)


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
