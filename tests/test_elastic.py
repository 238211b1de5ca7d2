"""The cluster as users have it: workers that leave, stall, die while the
data is placed, or come and go throughout a fit.

Every test here runs at distributed's and the library's default settings
(no shortened timeouts) and proves the fault happened where it says: the
process is gone or stopped, and the fit's history names the worker it lost
in the update it lost it.
"""
import os
import random
import signal
import time

import dask
import dask.array as da
import numpy as np
import pytest
import torch
from distributed import Client
from skorch.callbacks import Callback

from dask_adadamp._deadlines import FIRST_CALL_TIMEOUT
from helpers import FailsInTraining, adadamp_keys, make_classifier, weights

# 48 updates of 32 examples on 768 rows: 4 epochs; one chunk per update
KWARGS = dict(batch_size=32, grads_per_worker=32, max_epochs=4,
              module__n_features=64)
CONNECT = "30s"  # distributed's default connect timeout, which they must not wait


def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(384, 64)).astype("float32")
    return X, (X[:, :10].sum(axis=1) > 0).astype("int64")


class AtUpdate(Callback):
    """Run ``action(net)`` just before training updates ``numbers``."""

    def __init__(self, numbers, action):
        self.numbers, self.action, self.updates = set(numbers), action, 0

    def on_batch_begin(self, net, training=False, **kwargs):
        self.updates += 1 if training else 0
        if training and self.updates in self.numbers:
            self.action(net)


def rows(est):
    return [b for epoch in est.history for b in epoch["batches"] if "batch_size" in b]


def pids(client):
    return client.run(os.getpid)


def nanny_pids(cluster):
    """Address -> pid of each worker process its nanny runs now (from the
    nannies, not a broadcast that would wait on a worker just killed)."""
    out = {}
    for nanny in cluster.workers.values():
        proc = getattr(getattr(nanny, "process", None), "process", None)
        if proc is not None and proc.is_alive() and nanny.worker_address:
            out[nanny.worker_address] = proc.pid
    return out


def process_state(pid):
    """'T' for a stopped process, None for one that is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def wait_for_state(pid, state, timeout=10):
    """The process's state once it is ``state`` (a signal is delivered
    asynchronously), or its last state after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (now := process_state(pid)) != state and time.monotonic() < deadline:
        time.sleep(0.01)
    return now


@pytest.fixture(scope="module")
def reference(shared_cluster):
    """The undisturbed fit, on a fixed cluster of 3 worker processes."""
    X, y = data()
    with Client(shared_cluster(3)) as client:
        return weights(make_classifier(client=client, **KWARGS).fit(X, y))


def test_the_defaults_are_distributeds():
    assert dask.config.get("distributed.comm.timeouts.connect") == CONNECT
    assert dask.config.get("adadamp.call-timeout", "auto") == "auto"


@pytest.mark.parametrize("how", ["SIGKILL", "retire_workers", "cluster.scale"])
def test_a_worker_that_leaves_mid_fit_costs_no_connect_timeout(reference, new_cluster, how):
    """The first fit on a fresh cluster: the worker leaves before update
    20; the fit learns it from the scheduler and never calls it again."""
    X, y = data()
    cluster = new_cluster(3, processes=True)
    with Client(cluster) as client:
        before = pids(client)
        gone = {}

        def leave(net):
            now = pids(client)
            if how == "SIGKILL":
                gone["addr"] = sorted(now)[1]
                os.kill(now[gone["addr"]], signal.SIGKILL)
            elif how == "retire_workers":
                gone["addr"] = sorted(now)[1]
                client.retire_workers([gone["addr"]])
            else:  # SpecCluster closes its newest worker, data and all
                newest = list(cluster.worker_spec)[-1]
                gone["addr"] = cluster.workers[newest].worker_address
                cluster.scale(2)
            gone["pid"] = now[gone["addr"]]

        est = make_classifier(client=client, callbacks=[("leave", AtUpdate([20], leave))],
                              **KWARGS).fit(X, y)
        assert adadamp_keys(client) == []
        # It left during the fit: the scheduler no longer has it (a killed
        # process is gone), and the update that followed names it.
        assert gone["addr"] in before and gone["addr"] not in client.nthreads()
    if how == "SIGKILL":
        assert process_state(gone["pid"]) is None
    updates = rows(est)
    lost_at = [k for k, b in enumerate(updates) if b["workers_lost"]]
    assert lost_at and lost_at[0] >= 19 and updates[lost_at[0]]["workers_lost"] == [gone["addr"]]
    # and it cost no connect timeout: that update took a fraction of one
    hit = updates[lost_at[0]]
    assert hit["compute_ms"] + hit["comm_ms"] < 1e3 * 30 / 3
    assert torch.equal(weights(est), reference)


@pytest.mark.parametrize("as_dask", [False, True], ids=["numpy", "dask"])
def test_a_stalled_worker_is_left_behind_within_its_deadline(reference, new_cluster, fit_on,
                                                            as_dask):
    """A worker stopped with SIGSTOP keeps its sockets open and answers
    nothing; the scheduler would drop it only after worker-ttl (300 s)."""
    X, y = data()
    if as_dask:
        X, y = da.from_array(X, chunks=96), da.from_array(y, chunks=96)
    cluster = new_cluster(3, processes=True)
    stopped = {}
    try:
        with Client(cluster) as client:
            def stop(net):
                now = pids(client)
                stopped["addr"] = sorted(now)[0]
                stopped["pid"] = now[stopped["addr"]]
                os.kill(stopped["pid"], signal.SIGSTOP)
                stopped["state"] = wait_for_state(stopped["pid"], "T")

            est = make_classifier(client=client, callbacks=[("stop", AtUpdate([20], stop))],
                                  **KWARGS)
            est.fit(X, y)
            # still stopped when the fit returned: nothing waited for it
            assert process_state(stopped["pid"]) == "T"
            os.kill(stopped["pid"], signal.SIGCONT)
            assert adadamp_keys(client) == []
    finally:
        if "pid" in stopped:
            os.kill(stopped["pid"], signal.SIGCONT)
    assert stopped["state"] == "T"
    updates = rows(est)
    hit = [b for b in updates if stopped["addr"] in b["workers_lost"]]
    # one update waited for it, for its deadline (seconds, not worker-ttl)
    assert len(hit) == 1 and hit[0]["rounds"] == 2
    assert hit[0]["compute_ms"] + hit[0]["comm_ms"] < 1e3 * FIRST_CALL_TIMEOUT
    if as_dask:  # a dask array keeps its own blocks: the same input, undisturbed
        reference = weights(fit_on(3, X, y, **KWARGS))
    assert torch.equal(weights(est), reference)


@pytest.mark.parametrize("as_dask", [False, True], ids=["numpy", "dask"])
def test_a_worker_killed_while_the_data_is_placed(reference, new_cluster, monkeypatch,
                                                  fit_on, as_dask):
    X, y = data()
    if as_dask:
        X, y = da.from_array(X, chunks=96), da.from_array(y, chunks=96)
    cluster = new_cluster(3, processes=True)
    killed = {}
    with Client(cluster) as client:
        method = "persist" if as_dask else "scatter"
        original = getattr(client, method)

        def placing(*args, **kwargs):
            result = original(*args, **kwargs)
            if not killed:  # the first rows (or blocks) are on their way
                now = pids(client)
                addr = (kwargs.get("workers") or sorted(now))[0]
                killed.update(addr=addr, pid=now[addr])
                os.kill(now[addr], signal.SIGKILL)
            return result

        monkeypatch.setattr(client, method, placing)
        est = make_classifier(client=client, **KWARGS).fit(X, y)
        monkeypatch.undo()
        assert adadamp_keys(client) == []
        assert killed["addr"] not in client.nthreads()
    assert process_state(killed["pid"]) is None
    if as_dask:
        reference = weights(fit_on(3, X, y, **KWARGS))
    assert torch.equal(weights(est), reference)


def test_a_failed_placement_leaves_no_key_while_its_exception_lives(client, monkeypatch):
    """The rows of 500 shards go out in several batches; the third fails."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(32_000, 64)).astype("float32")
    y = (X[:, 0] > 0).astype("int64")
    monkeypatch.setattr("dask_adadamp._shards.SCATTER_BYTES", 2**20)
    original, calls = client.scatter, []

    def scatter(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError("no room for these rows")
        return original(*args, **kwargs)

    monkeypatch.setattr(client, "scatter", scatter)
    with pytest.raises(MemoryError, match="no room") as info:
        make_classifier(client=client, grads_per_worker=8, max_epochs=1).fit(X, y)
    monkeypatch.undo()
    assert len(calls) == 3  # two batches had been placed
    assert adadamp_keys(client) == []
    assert info.value is not None  # the exception outlived the check


def test_after_every_worker_is_killed_the_next_fit_trains(reference, new_cluster):
    """The nannies restart the workers under new addresses; the scheduler
    may still list the dead ones when the fit starts."""
    X, y = data()
    cluster = new_cluster(3, processes=True)
    with Client(cluster) as client:
        client.wait_for_workers(3, timeout=60)
        old = pids(client)
        for pid in old.values():
            os.kill(pid, signal.SIGKILL)
        est = make_classifier(client=client, **KWARGS).fit(X, y)
        assert not set(old) & set(client.nthreads())
        assert adadamp_keys(client) == []
    assert all(process_state(pid) is None for pid in old.values())
    assert torch.equal(weights(est), reference)


def test_after_every_worker_is_killed_a_failing_model_raises_its_own_error(new_cluster,
                                                                           by_value):
    X, y = data()
    cluster = new_cluster(2, processes=True)
    with Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        old = pids(client)
        for pid in old.values():
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match="fails in training"):
            make_classifier(client=client, module=FailsInTraining, **KWARGS).fit(X, y)
        assert not set(old) & set(client.nthreads())
        assert adadamp_keys(client) == []


def test_a_chaos_run_keeps_its_bits(reference, new_cluster):
    """A random worker killed every 6 updates, its nanny starting a new one:
    7 workers lost over the fit, the same weights, nothing left behind."""
    X, y = data()
    cluster = new_cluster(3, processes=True)
    chooser = random.Random(0)
    killed = []
    with Client(cluster) as client:
        def kill(net):
            now = nanny_pids(cluster)
            addr = chooser.choice(sorted(now))
            killed.append((addr, now[addr]))
            os.kill(now[addr], signal.SIGKILL)

        est = make_classifier(client=client, callbacks=[
            ("chaos", AtUpdate(range(6, 48, 6), kill))], **KWARGS).fit(X, y)
        assert adadamp_keys(client) == []
    assert len(killed) == 7 and all(process_state(pid) is None for _, pid in killed)
    lost = [a for b in rows(est) for a in b["workers_lost"]]
    assert set(lost) <= {a for a, _ in killed} and len(set(lost)) >= 1
    assert torch.equal(weights(est), reference)


def test_no_update_brings_the_client_more_than_a_few_gradients(client, small_data):
    """grads_per_worker=4 at batch 256: 64 chunks on 2 workers. The direct
    path would bring 64 gradients back; the workers add them up first."""
    X, y = small_data
    est = make_classifier(client=client, batch_size=256, grads_per_worker=4,
                          max_epochs=1).fit(X, y)
    n_weights = weights(est).numel() * 4
    for b in rows(est):
        assert b["bytes_in"] <= 4 * n_weights, b["bytes_in"] / n_weights
    with dask.config.set({"adadamp.tree-workers": None}):  # direct, by request
        direct = make_classifier(client=client, batch_size=256, grads_per_worker=4,
                                 max_epochs=1).fit(X, y)
    assert max(b["bytes_in"] for b in rows(direct)) > 30 * n_weights
    assert torch.equal(weights(est), weights(direct))


def test_every_update_and_epoch_has_its_resource_bill(client, small_data):
    X, y = small_data
    est = make_classifier(client=client, max_epochs=2).fit(X, y)
    for b in rows(est):
        assert b["workers_present"] == 2 and b["worker_s"] > 0
        # 128, 128 and 44 examples, 64 per worker: 2, 2 and 1 wanted
        assert b["workers_wanted"] == -(-b["batch_size"] // 64) and b["short"] is False
        assert b["workers_lost"] == [] and b["scale_lags_s"] == []
    for epoch in est.history:
        assert epoch["worker_s"] == pytest.approx(
            sum(b["worker_s"] for b in epoch["batches"] if "batch_size" in b))
        assert epoch["updates_short"] == 0


@pytest.mark.parametrize("value", [0, -1, "soon", "-3s"])
def test_a_bad_call_timeout_is_refused(client, small_data, value):
    X, y = small_data
    with dask.config.set({"adadamp.call-timeout": value}), \
            pytest.raises(ValueError, match="'adadamp.call-timeout'"):
        make_classifier(client=client, max_epochs=1).fit(X, y)


def test_a_call_that_fails_leaves_no_call_running_nor_an_unretrieved_error():
    # A round left by an error (a call raised, or the fit was interrupted):
    # the other calls are cancelled, and a second failed call's error is
    # retrieved (asyncio would log "Task exception was never retrieved").
    import asyncio
    import gc

    from dask_adadamp._deadlines import within_deadlines

    async def fails(message):
        raise RuntimeError(message)

    async def round_():
        slow = asyncio.ensure_future(asyncio.sleep(3600))
        tasks = {asyncio.ensure_future(fails("pool closed")): "a",
                 asyncio.ensure_future(fails("also closed")): "b", slow: "c"}
        with pytest.raises(RuntimeError, match="closed"):
            await within_deadlines(tasks, {"a": 5.0, "b": 5.0, "c": 5.0})
        await asyncio.sleep(0)
        return slow, list(tasks)

    loop = asyncio.new_event_loop()
    unretrieved = []
    loop.set_exception_handler(lambda loop, context: unretrieved.append(context))
    try:
        slow, tasks = loop.run_until_complete(round_())
        assert slow.cancelled()
        del tasks
        gc.collect()
    finally:
        loop.close()
    assert unretrieved == []
