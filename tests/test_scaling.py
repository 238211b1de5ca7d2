"""The cluster follows the batch size: min_workers / max_workers."""
import math
import time
from itertools import islice

import dask
import numpy as np
import pytest
import torch
from distributed import Client
from sklearn.base import clone
from skorch.callbacks import Callback

from dask_adadamp import _cluster as cluster_module
from dask_adadamp._allocation import Goodput, allocation, future_sizes, projected_size
from dask_adadamp._scaler import Scaler
from dask_adadamp.dampers import GeoDamp, GeoDampLR, PadaDamp
from dask_adadamp.simulate import batch_sizes
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


# --- ahead of need (issue 22) ---------------------------------------------


class Recorded(Scaler):
    """The fit's scaler, keeping its state before every update and the
    sizes it asked the cluster manager for."""

    made = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rows, self.scaled = [], []
        Recorded.made.append(self)

    def request(self, size, *args, **kwargs):
        asked = super().request(size, *args, **kwargs)
        # Not state(): the fit reads it (and its lags) once per update.
        self.rows.append({"size": size, "time": time.monotonic(),
                          "workers_asked": self.asked, "workers_wanted": self.wanted})
        return asked

    def _scale(self, n):
        self.scaled.append(n)
        super()._scale(n)


@pytest.fixture
def recorded(monkeypatch):
    Recorded.made = []
    monkeypatch.setattr(cluster_module, "Scaler", Recorded)
    return Recorded.made


def late_growth(**kwargs):
    # 12000 rows: batch 32 for 6 epochs (2250 updates, 3.5 s or more here),
    # then 128 for 2 (188 updates): 1 worker, then 3 (grads_per_worker 32,
    # max_workers 3).
    return make_classifier(batch_size=GeoDamp(initial=32, factor=4, delay=6),
                           grads_per_worker=32, max_epochs=8, **kwargs)


def late_data():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(12000, 64)).astype("float32")
    return X, (X[:, :10].sum(axis=1) > 0).astype("int64")


def first(values, condition):
    return next(i for i, v in enumerate(values) if condition(v))


def test_slow_workers_are_asked_for_ahead_of_the_batch(slow_cluster, shared_cluster,
                                                       recorded):
    X, y = late_data()
    with Client(shared_cluster(3)) as client:
        reference = weights(late_growth(client=client).fit(X, y))
    # Each worker takes 2 s to come, the batch needs 3 workers 3.5 s or more
    # into the fit: asked for early, they are there in time. In-process
    # workers: worker processes would add 6-8 s of their own start on this
    # 2-core machine while the fit runs, which is not the delay under test.
    cluster = slow_cluster(1, 2.0, processes=False)
    with Client(cluster) as client:
        est = late_growth(client=client, max_workers=3).fit(X, y)
        assert adadamp_keys(client) == []
    scaler, = recorded
    # the resource bill, in the history: each update's row
    bill = [b for epoch in est.history for b in epoch["batches"] if "batch_size" in b]
    used = [b["n_workers"] for b in bill]
    wanted = [row["workers_wanted"] for row in bill]
    present = [row["workers_present"] for row in bill]
    assert len(used) == len(wanted) == 2250 + 188
    needed = first(wanted, lambda w: w == 3)
    assert needed == 2250 and set(wanted[:needed]) == {1}
    assert first(used, lambda u: u == 3) - needed <= 2 and present[needed] == 3
    # asked for ahead (the first guess, 10 s, covers the batch of 128 after a
    # few updates), and the lead learned: about the 2 s a worker took to come
    asked = [row["workers_asked"] for row in bill]
    assert first(asked, lambda a: a == 3) < 100
    lags = [lag for row in bill for lag in row["scale_lags_s"]]
    assert len(lags) == 1 and 2 < lags[0] < 10
    assert scaler.lead_s == pytest.approx(lags[0], abs=1e-3)
    torch.testing.assert_close(weights(est), reference, rtol=0, atol=0)
    # given back: one live worker
    assert len(cluster.worker_spec) == 1
    assert wait_until(lambda: len(client_workers(cluster)) == 1)


def client_workers(cluster):
    return list(cluster.scheduler_info["workers"])


@pytest.mark.parametrize("damper, max_batch_size", [
    (PadaDamp(initial=20, rate=7.0), 100),
    (GeoDamp(initial=24, factor=3, delay=1), None),
    (GeoDampLR(initial=50, factor=2, delay=1), None),
])
def test_the_lookahead_of_a_passive_schedule_is_what_the_fit_runs(
        client, small_data, recorded, damper, max_batch_size):
    X, y = small_data
    # 2 workers on the shared 2-worker cluster: a scaler, never a scale.
    est = make_classifier(client=client, batch_size=damper, min_workers=2, max_workers=2,
                          max_batch_size=max_batch_size, max_epochs=3).fit(X, y)
    scaler, = recorded
    assert scaler.scaled == []
    sizes = batch_sizes(est)
    # It replayed to the end, epochs' last and shorter updates included (a
    # replay given up there for a projection asks too late).
    assert scaler._passive
    # From the fit's start, with the scaler's own inputs: every size, and
    # no update after the fit's last epoch.
    replay = list(future_sizes(clone(damper), 0, 0, len(X), scaler.n_train,
                               scaler.max_batch_size, scaler.last_epoch))
    assert [size for _, size in replay] == sizes
    # From a later update on (in another epoch), with the schedule's state
    # as the fit left it, and without changing that state.
    state = est.damper_.state_dict()
    (updates, epochs, rows_left), _ = replay[-6]
    assert updates == len(sizes) - 6 and epochs >= 1
    ahead = future_sizes(est.damper_, updates, epochs, rows_left, len(X), max_batch_size)
    assert [size for _, size in islice(ahead, 6)] == sizes[-6:]
    assert est.damper_.state_dict() == state


def test_an_adaptive_schedule_is_projected_never_below_its_size():
    assert projected_size([(k, 32 * 2 ** k) for k in range(4)], horizon=3) == 2048
    assert projected_size([(0, 100), (1, 90), (2, 80)], horizon=10) == 80
    assert projected_size([(0, 10), (1, 100)], horizon=10, cap=500) == 500


def test_the_cluster_grows_ahead_without_fighting_adapt(reference, new_cluster, recorded):
    X, y = data()
    cluster = new_cluster(1)
    adaptive = cluster.adapt(minimum=1, maximum=3, interval="200ms")
    assert wait_until(lambda: adaptive.state == "running")
    with Client(cluster) as client:
        # Adaptive sees no task of the fit: without the raised minimum it
        # would never add a worker, and this callback would time out.
        watch = WaitForWorkers(client, 3)
        est = growing(client=client, max_workers=5, callbacks=[("watch", watch)]).fit(X, y)
        scaler, = recorded
        assert scaler.scaled == []  # the scaler never called scale itself
        assert max(row["workers_asked"] for row in scaler.rows) == 3  # adapt's maximum
        assert max(watch.seen) == 3
        torch.testing.assert_close(weights(est), reference, rtol=0, atol=0)
        # adapt's settings back, still adapting, and it shrinks the cluster
        assert cluster._adaptive is adaptive and adaptive.state == "running"
        assert (adaptive.minimum, adaptive.maximum) == (1, 3)
        assert wait_until(lambda: len(client.nthreads()) == 1, timeout=60)


class RetireFirst(Callback):
    """Retire the cluster's first worker (name 0) after update ``at`` (and
    after WaitForWorkers saw the cluster whole: the fit replaces the worker
    at its next update)."""

    def __init__(self, client, at):
        self.client, self.at, self.updates, self.retired = client, at, 0, None

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            self.updates += 1
            if self.updates == self.at:
                info = self.client.scheduler_info(n_workers=-1)["workers"]
                self.retired, = [a for a, w in info.items() if w["name"] == 0]
                self.client.retire_workers(workers=[self.retired])


def test_scale_back_keeps_live_workers_when_the_first_one_left(reference, new_cluster):
    X, y = data()
    cluster = new_cluster(1)
    with Client(cluster) as client:
        retire, watch = RetireFirst(client, at=30), WaitForWorkers(client, 3)
        est = growing(client=client, max_workers=3,
                      callbacks=[("watch", watch), ("retire", retire)])
        est.fit(X, y)
        torch.testing.assert_close(weights(est), reference, rtol=0, atol=0)
        # the retired worker was replaced: 3 again for the last updates
        assert watch.seen[29:] == [3] * (len(watch.seen) - 29)
        # Back at the size found, and that one worker is live (not the
        # retired worker's entry with the live ones retired).
        assert retire.retired is not None and len(cluster.worker_spec) == 1
        assert wait_until(lambda: len(client.nthreads()) == 1)
        assert retire.retired not in client.nthreads()
        # The next fit trains (it waited 60 s for workers, then failed).
        start = time.monotonic()
        make_classifier(client=client, max_epochs=1).fit(X, y)
        assert time.monotonic() - start < 30
        assert adadamp_keys(client) == []


def test_arrivals_list_every_worker(new_cluster):
    # More than the 5 workers scheduler_info() lists on distributed 2025.4-2026.6.
    cluster = new_cluster(6)
    with Client(cluster) as client, dask.config.set({"adadamp.scale-lead": 0}):
        scaler = Scaler(client, grads_per_worker=32, max_workers=8)
        assert scaler.arrivals() is None  # nothing changed
        assert scaler.request(7 * 32, updates=0, epochs=0, rows_left=1000)
        seen = []

        def all_seven():
            workers = scaler.arrivals()
            seen.extend([workers] if workers is not None else [])
            return bool(seen) and len(seen[-1]) == 7

        assert wait_until(all_seven)
        assert seen[-1] == sorted(client.nthreads())
        assert scaler.state()["workers_present"] == 7
        scaler.close()


def test_goodput_adds_workers_only_where_the_update_gets_faster():
    # Communication dominates: 30 ms more per worker against 8 ms of compute.
    slow_network = Goodput(grads_per_worker=32)
    for workers in (1, 2):
        slow_network.add({"batch_size": 128, "n_workers": workers,
                          "compute_ms": 8.0 / workers, "comm_ms": 10.0 + 30.0 * workers})
    assert slow_network.choose(128, low=1, high=4) == 1
    assert slow_network.choose(128, low=2, high=4) == 2  # never below min_workers
    # Compute dominates: 80 ms of compute, 1 ms per worker.
    fast_network = Goodput(grads_per_worker=32)
    for workers in (1, 2):
        fast_network.add({"batch_size": 128, "n_workers": workers,
                          "compute_ms": 80.0 / workers, "comm_ms": 5.0 + 1.0 * workers})
    assert fast_network.choose(128, low=1, high=4) == 4
    # A third worker measured slower per row (two cores, three processes):
    # the third is not worth it.
    fast_network.add({"batch_size": 128, "n_workers": 3,
                      "compute_ms": 80.0, "comm_ms": 8.0})
    assert fast_network.choose(128, low=1, high=4) == 2
    # Nothing measured yet: the batch rule.
    assert Goodput(grads_per_worker=32).choose(128, low=1, high=4) == 4


def test_goodput_is_the_scalers_allocation_when_configured(new_cluster):
    with Client(new_cluster(1)) as client, dask.config.set({"adadamp.allocation": "goodput",
                                                             "adadamp.scale-lead": 0}):
        scaler = Scaler(client, grads_per_worker=32, max_workers=4)
        slow = {"batch_size": 128, "compute_ms": 4.0}
        scaler.request(128, 0, 0, 1000, measured={**slow, "n_workers": 1, "comm_ms": 40.0})
        scaler.request(128, 1, 0, 872, measured={**slow, "n_workers": 2, "comm_ms": 80.0})
        assert scaler.state()["workers_wanted"] == 1 and scaler.state()["workers_asked"] == 1
        scaler.close()
    with pytest.raises(ValueError, match="'adadamp.allocation'='fast' is not accepted"), \
            dask.config.set({"adadamp.allocation": "fast"}):
        allocation()
