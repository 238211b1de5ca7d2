"""What a fit computes: gradient descent, determinism, dask arrays, history."""
import copy
import os

import dask
import dask.array as da
import numpy as np
import pytest
import torch
from distributed import Client, wait

from dask_adadamp import DaskRegressor
from dask_adadamp.models import MLP
from dask_adadamp._worker import ModelSpec, chunk_gradient
from helpers import DiesOnCue, adadamp_keys, make_classifier, weights


def test_full_batch_is_gradient_descent(client, digits_data):
    X, _, y, _ = digits_data
    est = make_classifier(batch_size=len(X), grads_per_worker=200, max_epochs=4,
                          lr=0.5)
    est.initialize()
    module = copy.deepcopy(est.module_)
    est.partial_fit(X, y)

    opt = torch.optim.SGD(module.parameters(), lr=0.5)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(module(torch.from_numpy(X)),
                                                 torch.from_numpy(y))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    expected = torch.nn.utils.parameters_to_vector(module.parameters()).detach()
    torch.testing.assert_close(weights(est), expected, rtol=1e-5, atol=1e-6)
    assert est.history[:, "model_updates"] == [1, 2, 3, 4]
    # Each epoch's training loss is the full-batch loss before its step.
    assert est.history[:, "train_loss"] == pytest.approx(losses, rel=1e-5)


def test_same_bits_on_1_2_3_workers_and_across_runs(digits_data, fit_on):
    X, _, y, _ = digits_data
    # Dropout too: each task draws the same masks wherever it runs.
    kwargs = dict(batch_size=200, grads_per_worker=50, max_epochs=2,
                  optimizer=torch.optim.SGD, optimizer__momentum=0.9,
                  module__dropout=0.2, train_split=None)
    # Rounds to 2 or 3 workers go either way ("auto" tries both); the last
    # two fits call every worker from the client, or one that passes the
    # call on and adds partial sums, in a tree. Each size is a cluster of
    # worker processes of its own; the three fits on 3 workers are three
    # runs on one cluster.
    fits = [fit_on(n, X, y, **kwargs) for n in (1, 2, 3)]
    fits += [fit_on(3, X, y, tree_workers=tw, **kwargs) for tw in (None, 2)]
    assert [f.history[-1, "n_workers"] for f in fits] == [1, 2, 3, 3, 3]
    updates = [[b for epoch in f.history for b in epoch["batches"]] for f in fits]
    assert {b["tree"] for b in updates[2]} == {True, False}
    assert not any(b["tree"] for b in updates[3])
    # (an epoch's last update may be one chunk: one call, no tree)
    assert all(b["tree"] == (b["n_workers"] > 1) for b in updates[4])
    # Through the tree the client sent the weights once and got one sum back.
    nbytes = weights(fits[0]).numpy().nbytes
    full = [(u3, u4) for u3, u4 in zip(updates[3], updates[4]) if u3["batch_size"] == 200]
    assert {(u["bytes_out"], u["bytes_in"]) for u, _ in full} == {(3 * nbytes, 4 * nbytes)}
    assert {(u["bytes_out"], u["bytes_in"]) for _, u in full} == {(nbytes, nbytes)}
    for other in fits[1:]:
        assert torch.equal(weights(fits[0]), weights(other))
        assert other.history[:, "train_loss"] == fits[0].history[:, "train_loss"]
        assert ([b["train_loss"] for b in other.history[-1, "batches"]]
                == [b["train_loss"] for b in fits[0].history[-1, "batches"]])


def test_dask_arrays_train_where_they_are(client, digits_data):
    X, X_test, y, y_test = digits_data
    Xd = da.from_array(X, chunks=(300, 64)).persist()
    yd = da.from_array(y, chunks=300).persist()
    wait([Xd, yd])
    before = client.run(bytes_received)
    est = make_classifier(max_epochs=15, batch_size=64, grads_per_worker=32,
                          lr=0.1, optimizer__momentum=0.9).fit(Xd, yd)
    moved = sum(client.run(bytes_received).values()) - sum(before.values())
    assert est.score(X_test, y_test) > 0.9
    assert list(est.classes_) == list(range(10))
    # Prediction on a dask array stays a dask array, computed on the workers.
    X_test_d = da.from_array(X_test, chunks=100)
    proba = est.predict_proba(X_test_d)
    assert isinstance(proba, da.Array)
    np.testing.assert_allclose(proba.compute(), est.predict_proba(X_test), rtol=1e-6)
    np.testing.assert_array_equal(est.predict(X_test_d).compute(), est.predict(X_test))
    # 345 updates moved less between workers than the data's own size: only
    # work stealing's occasional copy of a block, never data per update.
    assert est.history[-1, "model_updates"] == 345
    assert moved < 2 * (X.nbytes + y.nbytes)
    # The fit made no copies of its own, and the user's blocks outlive it.
    assert adadamp_keys(client) == []
    assert Xd.sum().compute() == pytest.approx(X.sum(), rel=1e-5)


def bytes_received(dask_worker):
    return sum(d["total"] for d in dask_worker.transfer_incoming_log)


def test_dask_array_regression_matches_targets(client):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 3)).astype("float32")
    y = (X @ np.array([[1.0], [-2.0], [0.5]])).astype("float32")
    est = DaskRegressor(torch.nn.Linear, module__in_features=3,
                        module__out_features=1, lr=0.1, batch_size=50,
                        grads_per_worker=25, max_epochs=10, train_split=None,
                        random_state=0, verbose=0)
    est.fit(da.from_array(X, chunks=100), da.from_array(y, chunks=(100, 1)))
    assert est.score(X, y) > 0.99


def test_history_records_each_update_and_epoch(client, small_data):
    X, y = small_data
    est = make_classifier(batch_size=128, grads_per_worker=64, max_epochs=3,
                          lr=0.05).fit(X, y)
    # 300 examples in updates of 128: 128, 128, 44.
    for epoch in est.history:
        batches = [b for b in epoch["batches"] if "batch_size" in b]
        assert [b["batch_size"] for b in batches] == [128, 128, 44]
        assert all(np.isfinite(b["train_loss"]) for b in batches)
    assert est.history[:, "model_updates"] == [3, 6, 9]
    assert est.history[:, "n_examples"] == [300, 600, 900]
    assert est.history[:, "batch_size"] == [128, 128, 128]
    assert est.history[:, "lr"] == [0.05] * 3
    assert est.history[:, "n_workers"] == [2, 2, 2]
    first = est.history[0]
    expected = sum(b["train_loss"] * b["batch_size"] for b in first["batches"]) / 300
    assert first["train_loss"] == pytest.approx(expected)


def test_partial_fit_continues_counts(client, small_data):
    X, y = small_data
    est = make_classifier(max_epochs=1)
    est.partial_fit(X, y)
    est.partial_fit(X, y)
    assert est.history[:, "model_updates"] == [3, 6]
    assert est.history[:, "n_examples"] == [300, 600]


@pytest.mark.parametrize("tree_workers", [None, 2], ids=["direct", "tree"])
def test_worker_killed_mid_update_gives_the_same_weights(digits_data, tmp_path, fit_on,
                                                         new_cluster, by_value,
                                                         tree_workers):
    X, _, y, _ = digits_data
    kwargs = dict(batch_size=256, grads_per_worker=64, max_epochs=3,
                  module__n_features=64)
    reference = fit_on(3, X, y, **kwargs)

    from skorch.callbacks import Callback

    cue = tmp_path / "die"

    class Cue(Callback):
        """Lay the cue before update 5: a worker dies inside its compute."""

        def __init__(self):
            self.updates = 0

        def on_batch_begin(self, net, training=False, **kwargs):
            self.updates += 1 if training else 0
            if training and self.updates == 5:
                cue.touch()

    # Worker processes of its own: one of them is killed.
    with Client(new_cluster(3, processes=True)) as client, \
            dask.config.set({"adadamp.tree-workers": tree_workers}):
        before = set(client.nthreads())
        est = make_classifier(client=client, module=DiesOnCue,
                              module__cue=str(cue), callbacks=[("cue", Cue())],
                              **kwargs).fit(X, y)
        assert adadamp_keys(client) == []
        after = set(client.nthreads())
    # The kill landed during update 5: a worker consumed the cue and died (its
    # nanny restarted it under a new address), and update 5 alone needed a
    # second round of calls.
    assert not cue.exists() and before - after
    rounds = [b["rounds"] for epoch in est.history for b in epoch["batches"]]
    assert rounds[4] == 2 and rounds[:4] + rounds[5:] == [1] * (len(rounds) - 1)
    assert torch.equal(weights(est), weights(reference))
    assert est.history[:, "train_loss"] == reference.history[:, "train_loss"]


def test_torch_tensors_and_datasets(client, small_data):
    X, y = small_data
    from_numpy = make_classifier().fit(X, y)
    from_tensor = make_classifier().fit(torch.from_numpy(X), torch.from_numpy(y))
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(X), torch.from_numpy(y))
    from_dataset = make_classifier().fit(dataset, None)
    assert torch.equal(weights(from_numpy), weights(from_tensor))
    assert torch.equal(weights(from_numpy), weights(from_dataset))


def test_embedded_cluster_is_started_once_and_reused(tmp_path):
    script = tmp_path / "fit.py"
    # As with any process-based LocalCluster, a script needs the main guard.
    script.write_text(
        "import numpy as np, os\n"
        "from dask_adadamp import _cluster as cluster\n"
        "from helpers import make_classifier\n"
        "if __name__ == '__main__':\n"
        "    X = np.random.default_rng(0).normal(size=(100, 64)).astype('float32')\n"
        "    y = (X[:, 0] > 0).astype('int64')\n"
        "    make_classifier(max_epochs=1).fit(X, y)\n"
        "    first = cluster._EMBEDDED[None]\n"
        "    make_classifier(max_epochs=1).fit(X, y)\n"
        "    assert cluster._EMBEDDED[None] is first\n"
        "    assert len(first.nthreads()) == (os.cpu_count() or 1)\n"
        "    print('ok')\n")
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=os.path.dirname(__file__))
    out = subprocess.run([sys.executable, str(script)], capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


class BatchNormNet(torch.nn.Module):
    def __init__(self, **ignored):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
            torch.nn.Linear(32, 10))

    def forward(self, X):
        return self.layers(X)


def test_batch_norm_statistics_follow_training(client, digits_data):
    X, _, y, _ = digits_data
    # One chunk per update: the batch statistics are the full batch's, so
    # plain full-batch gradient descent is the exact reference.
    est = make_classifier(module=BatchNormNet, batch_size=len(X),
                          grads_per_worker=len(X), max_epochs=3, lr=0.5)
    est.initialize()
    module = copy.deepcopy(est.module_)
    est.partial_fit(X, y)

    opt = torch.optim.SGD(module.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(module(torch.from_numpy(X)),
                                          torch.from_numpy(y)).backward()
        opt.step()
    torch.testing.assert_close(weights(est), weights_of(module), rtol=1e-5, atol=1e-6)
    bn, bn_ref = est.module_.layers[1], module.layers[1]
    torch.testing.assert_close(bn.running_mean, bn_ref.running_mean)
    torch.testing.assert_close(bn.running_var, bn_ref.running_var)
    assert int(bn.num_batches_tracked) == 3
    # predictions use those statistics (eval mode), as in plain torch
    module.eval()
    np.testing.assert_allclose(
        est.predict_proba(X[:20]),
        torch.softmax(module(torch.from_numpy(X[:20])), 1).detach().numpy(),
        rtol=1e-4, atol=1e-5)


def weights_of(module):
    return torch.nn.utils.parameters_to_vector(module.parameters()).detach()


def test_updates_are_spread_over_the_workers(client, digits_data):
    X, _, y, _ = digits_data
    est = make_classifier(batch_size=128, grads_per_worker=64, max_epochs=2).fit(X, y)
    batches = [b for epoch in est.history for b in epoch["batches"]]
    # Full updates have 2 chunks, placed so that each worker computes one.
    full = [b for b in batches if b["batch_size"] == 128]
    assert len(full) == 22  # 11 full updates of 128 per epoch, 2 epochs
    assert all(len(b["workers_ms"]) == 2 and b["n_workers"] == 2 for b in full)
    for b in full:  # each worker's round trip includes its compute
        assert all(rtt >= compute > 0 for rtt, compute in b["workers_ms"].values())
        assert b["compute_ms"] == max(c for _, c in b["workers_ms"].values())
        assert b["comm_ms"] >= 0 and b["rounds"] == 1


def test_gradients_do_not_depend_on_where_the_weights_landed_in_memory():
    """Weights arrive at any alignment in a message; a one-row chunk (a
    matrix-vector product) once rounded differently at some of them."""
    torch.manual_seed(0)
    module = MLP(40, 10, (256, 256))
    spec = ModelSpec("align", module, torch.nn.CrossEntropyLoss(), "cpu")
    w = torch.nn.utils.parameters_to_vector(module.parameters()).detach().numpy()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 40)).astype("float32")
    y = rng.integers(0, 10, 4)
    grads = []
    for offset in range(0, 64, 4):
        buffer = np.zeros(w.nbytes + 128, np.uint8)
        start = (-buffer.ctypes.data) % 64 + offset
        moved = np.frombuffer(buffer[start:start + w.nbytes], np.float32)
        moved[...] = w
        grads.append(chunk_gradient(spec, moved, {}, X, y, np.array([1]), seed=0)[0])
    for g in grads[1:]:
        np.testing.assert_array_equal(g, grads[0])
