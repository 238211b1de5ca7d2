"""Workers lost in the middle of an update: every worker, and for good."""
import sys

import dask
import dask.array as da
import numpy as np
import pytest
import torch
from distributed import Client
from distributed.protocol.serialize import to_serialize
from skorch.callbacks import Callback

from dask_adadamp._engine import _ensure_extension
from dask_adadamp.exceptions import NoWorkersError
from helpers import DiesOnCue, FailsInTraining, adadamp_keys, make_classifier, weights

KWARGS = dict(batch_size=256, grads_per_worker=64, max_epochs=2,
              module__n_features=64)


class AtUpdate(Callback):
    """Run ``action`` just before training update ``number``."""

    def __init__(self, number, action):
        self.number, self.action, self.updates = number, action, 0

    def on_batch_begin(self, net, training=False, **kwargs):
        self.updates += 1 if training else 0
        if training and self.updates == self.number:
            self.action()


@pytest.mark.parametrize("as_dask", [False, True])
def test_every_worker_killed_mid_update_gives_the_same_weights(
        digits_data, tmp_path, by_value, fit_on, new_cluster, as_dask):
    X, _, y, _ = digits_data
    cues = tmp_path / "cues"
    cues.mkdir()

    def lay_cues():  # one per worker: each dies inside its compute
        for i in range(2):
            (cues / str(i)).touch()

    if as_dask:  # the blocks come back from their graph
        X, y = da.from_array(X, chunks=400), da.from_array(y, chunks=400)
    # dask arrays keep their own blocks: the reference is fit on the same
    # input, on two worker processes that nothing kills.
    reference = fit_on(2, X, y, **KWARGS)
    # Worker processes of its own: both are killed.
    with Client(new_cluster(2, processes=True)) as client:
        before = set(client.nthreads())
        est = make_classifier(client=client, module=DiesOnCue, module__cue=str(cues),
                              callbacks=[("kill", AtUpdate(5, lay_cues))], **KWARGS)
        est.fit(X, y)
        after = set(client.nthreads())
        assert adadamp_keys(client) == []
    # Both workers died during update 5 and came back under new addresses.
    assert list(cues.iterdir()) == [] and not before & after
    rounds = [b["rounds"] for epoch in est.history for b in epoch["batches"]]
    assert rounds[4] >= 2 and sum(rounds) - rounds[4] == len(rounds) - 1
    assert torch.equal(weights(est), weights(reference))


def test_no_workers_left_raises_after_the_timeout(small_data, new_cluster):
    X, y = small_data
    # In-process workers: the cluster manager scales them away all the same.
    # At the default connect timeout: the fit learns the departures from the
    # scheduler's events and never calls the addresses that are gone.
    cluster = new_cluster(2)
    with Client(cluster) as client:
        gone = AtUpdate(3, lambda: cluster.scale(0) or client.sync(
            cluster._correct_state))
        est = make_classifier(client=client, callbacks=[("gone", gone)], max_epochs=3)
        with dask.config.set({"adadamp.recover-timeout": 3}):
            with pytest.raises(NoWorkersError, match="no workers for 3 s"):
                est.fit(X, y)
        assert client.nthreads() == {}
        # the weights are those of the last complete update (update 2)
        assert len(est.history[-1, "batches"]) == 3
        assert adadamp_keys(client) == []


def test_a_member_of_the_tree_that_cannot_be_reached_is_reported_lost(client):
    """A call passed on to a worker that is gone: the caller still sends up
    what it computed and names the lost worker and those below it."""
    from dask_adadamp._worker import ModelSpec

    _ensure_extension(client)
    alive = sorted(client.nthreads())
    # Ports nothing listens on: calls to them fail as to a dead worker's.
    dead, below = "tcp://127.0.0.1:9", "tcp://127.0.0.1:7"
    spec = ModelSpec("lost-member", torch.nn.Linear(2, 1), torch.nn.MSELoss(), "cpu")
    # alive[0] passes on to [alive[1]] and to [dead, below] (a binomial tree)
    members = [(m, [], [], spec) for m in (alive[0], alive[1], dead, below)]

    async def call():
        return await client.rpc(alive[0]).adadamp_tree(
            token="lost-member", weights=np.zeros(3, "float32"), buffers=None,
            sq_norms=False, n=0, members=to_serialize(members))

    def connect_timeout(seconds):  # a refused connection is retried that long
        old = dask.config.get("distributed.comm.timeouts.connect")
        dask.config.set({"distributed.comm.timeouts.connect": seconds})
        return old

    old = client.run(connect_timeout, "1s")
    try:
        reply = client.sync(call)
    finally:
        client.run(connect_timeout, next(iter(old.values())))
        client.run(lambda: __import__("dask_adadamp._worker")._worker.forget("lost-member"))
    assert reply["status"] == "tree"
    assert {a: r["status"] for a, r in reply["result"]["replies"].items()} == {
        alive[0]: "OK", alive[1]: "OK", dead: "lost", below: "unreached"}


def _not_importable_module_class():
    """A module class whose module exists only in this process."""
    import types
    mod = types.ModuleType("adadamp_not_on_workers")
    exec("import torch\n"
         "class Elsewhere(torch.nn.Linear):\n"
         "    def __init__(self, n_features=64, hidden=None):\n"
         "        super().__init__(n_features, 2)\n", mod.__dict__)
    sys.modules[mod.__name__] = mod
    return mod.Elsewhere


@pytest.mark.parametrize("as_dask, tree_workers", [(False, None), (True, None), (False, 1)],
                         ids=["numpy", "dask", "through-the-tree"])
@pytest.mark.parametrize("failure", ["raises in training", "not importable"])
def test_a_fit_that_fails_on_the_workers_leaves_nothing(client, small_data, by_value,
                                                        failure, as_dask, tree_workers):
    """The error is the module's own, and the fit's keys are gone while the
    exception (and its frames) is still alive, as in a notebook."""
    X, y = small_data
    if as_dask:
        X, y = da.from_array(X, chunks=100), da.from_array(y, chunks=100)
    if failure == "raises in training":
        module, expected = FailsInTraining, (RuntimeError, "fails in training")
    else:
        module, expected = _not_importable_module_class(), (
            ModuleNotFoundError, "adadamp_not_on_workers")
    try:
        with pytest.raises(expected[0], match=expected[1]) as info, \
                dask.config.set({"adadamp.tree-workers": tree_workers}):
            make_classifier(client=client, module=module, max_epochs=1).fit(X, y)
    finally:
        sys.modules.pop("adadamp_not_on_workers", None)
    assert adadamp_keys(client, timeout=2) == []
    assert info.value is not None  # the exception outlived the check


def test_a_client_closed_mid_fit_says_so(small_data, new_cluster):
    X, y = small_data
    # In-process workers: what is closed is the client, not a process.
    cluster = new_cluster(2)
    client = Client(cluster)
    est = make_classifier(client=client, max_epochs=3,
                          callbacks=[("close", AtUpdate(3, client.close))])
    with pytest.raises(RuntimeError, match="client .* was closed during the fit"):
        est.fit(X, y)
    with Client(cluster) as other:  # the cluster is left clean and trains
        assert adadamp_keys(other) == []
        make_classifier(client=other, max_epochs=1).fit(X, y)
