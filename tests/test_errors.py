"""Bad input fails before the cluster is touched, with a message that names
the value and what is accepted; a diverging fit trains on as in skorch,
unless its batch-size schedule reads the loss: then it stops with finite
weights."""
import json
import re
import urllib.request

import dask
import dask.array as da
import numpy as np
import pytest
import torch

from dask_adadamp import DaskRegressor
from dask_adadamp import _cluster as cluster
from dask_adadamp.dampers import AdaDamp, NoiseScaleDamp, RadaDamp
from dask_adadamp.models import MLP

from helpers import make_classifier, weights


@pytest.fixture
def untouched_cluster(monkeypatch):
    """Fail the test if a fit gets as far as asking for a cluster."""
    def touched(*args, **kwargs):
        raise AssertionError("the fit reached the cluster")
    monkeypatch.setattr(cluster, "resolve_client", touched)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 64)).astype("float32")
    return X, (X[:, 0] > 0).astype("int64")


@pytest.mark.parametrize("name, value", [
    ("batch_size", 0), ("batch_size", -2), ("batch_size", 1.5),
    ("batch_size", "64"), ("batch_size", True),
    ("grads_per_worker", 0), ("grads_per_worker", -5), ("grads_per_worker", 2.0),
])
def test_bad_sizes(untouched_cluster, data, name, value):
    with pytest.raises(ValueError, match=rf"{name}={value!r} .*positive integer"):
        make_classifier(**{name: value}).fit(*data)


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
@pytest.mark.parametrize("device", ["tpu", "gpu0", 3.5])
def test_unknown_device(untouched_cluster, data, device, method):
    # (initialize() hands any device to the modules' .to(), as skorch does)
    with pytest.raises(ValueError, match=rf"device={device!r} .*'cpu', 'cuda'"):
        getattr(make_classifier(device=device), method)(*data)


@pytest.mark.parametrize("random_state", [-1, 1.5, "seed"])
def test_bad_random_state(untouched_cluster, data, random_state):
    with pytest.raises(ValueError, match=rf"random_state={random_state!r}"):
        make_classifier(random_state=random_state).fit(*data)


def test_mismatched_lengths(untouched_cluster, data):
    X, y = data
    with pytest.raises(ValueError, match="X has 50 rows but y has 49"):
        make_classifier().fit(X, y[:-1])


def test_mismatched_lengths_dask(untouched_cluster, data):
    X, y = data
    with pytest.raises(ValueError, match="X has 50 rows but y has 49"):
        make_classifier().fit(da.from_array(X, chunks=10), da.from_array(y[:-1]))


def test_empty_data(untouched_cluster):
    with pytest.raises(ValueError, match=r"X of shape \(0, 64\) holds no examples"):
        make_classifier().fit(np.zeros((0, 64), "float32"), np.zeros(0, "int64"))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_X(untouched_cluster, data, bad):
    X, y = data
    X = X.copy()
    X[7, 3] = bad
    with pytest.raises(ValueError, match=r"NaN or infinite .*index \(7, 3\)"):
        make_classifier().fit(X, y)


def test_non_finite_dask_X_is_refused_and_released(client, data):
    X, y = data
    X = X.copy()
    X[7, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        make_classifier().fit(da.from_array(X, chunks=10), da.from_array(y, chunks=10))
    # the client fixture checks that nothing of the fit is left


def test_target_of_wrong_shape_for_classifier(untouched_cluster, data):
    X, y = data
    y2 = np.stack([y, y], axis=1).astype("float32")
    with pytest.raises(ValueError, match=r"y of shape \(50, 2\).*CrossEntropyLoss"):
        make_classifier().fit(X, y2)


def test_X_that_does_not_fit_the_module(untouched_cluster, data):
    X, y = data
    with pytest.raises(ValueError, match=r"X of shape \(50, 10\) .* does not fit the module MLP"):
        make_classifier().fit(X[:, :10], y)


def test_missing_y(untouched_cluster, data):
    with pytest.raises(ValueError, match="y=None is not accepted"):
        make_classifier().fit(data[0], None)


def test_dask_arrays_need_train_split_none(untouched_cluster, data):
    X, y = data
    from skorch.dataset import ValidSplit
    with pytest.raises(ValueError, match=r"train_split=.*ValidSplit.* dask arrays"):
        make_classifier(train_split=ValidSplit(5)).fit(da.from_array(X), da.from_array(y))


@pytest.mark.parametrize("value", ["yes", -1, 2.5, True])
def test_bad_tree_config(untouched_cluster, data, value):
    with dask.config.set({"adadamp.tree-workers": value}), pytest.raises(
            ValueError, match=re.escape(f"'adadamp.tree-workers'={value!r} is not accepted")):
        make_classifier().fit(*data)


def test_bad_client(data):
    with pytest.raises(TypeError, match=r"client=42 is not accepted; pass a distributed.Client"):
        make_classifier(client=42).fit(*data)


def test_diverging_fit_trains_on_as_skorch_with_a_schedule_that_ignores_the_loss(
        client, data):
    X, y = data
    est = make_classifier(lr=1e6, batch_size=10, grads_per_worker=5, max_epochs=3)
    est.fit(X * 1e3, y)  # skorch trains on too
    losses = est.history[:, "train_loss"]
    assert len(losses) == 3 and not np.isfinite(losses[-1])
    assert est.history[-1, "model_updates"] == 15
    assert est.predict(X).shape == (50,)
    # The dashboard got the fit's updates, the non-finite losses as gaps.
    url = client.dashboard_link.rsplit("/", 1)[0]
    *_, start = [msg for _, msg in client.get_events("adadamp") if msg["kind"] == "start"]
    with urllib.request.urlopen(f"{url}/adadamp/metrics.json?fit={start['fit']}") as r:
        [fit] = json.load(r)["fits"]
    assert fit["status"] == "finished" and len(fit["updates"]["loss"]) == 15
    assert None in fit["updates"]["loss"]


@pytest.mark.parametrize("schedule", [
    AdaDamp(initial=10), RadaDamp(initial=10), NoiseScaleDamp(initial=10)])
def test_diverging_fit_stops_with_the_last_finite_weights(client, data, schedule):
    X, y = data
    X = X * 1e3
    est = make_classifier(lr=1e6, batch_size=schedule, grads_per_worker=5, max_epochs=5)
    est.initialize()
    stepped = [weights(est)]  # the weights before each update

    from skorch.callbacks import Callback

    class Remember(Callback):
        def on_batch_end(self, net, training=False, **kwargs):
            if training:
                stepped.append(weights(net))

    est.set_params(callbacks=[("remember", Remember())])
    with pytest.raises(FloatingPointError, match=(
            rf"not finite \(loss .*\) at model update (\d+) .*schedule "
            rf"{type(schedule).__name__}\(initial=10\) reads the loss or gradient"
            r".*a schedule that does not read them \(Constant, GradientDescent, "
            r"PadaDamp, GeoDamp, GeoDampLR\)")) as info:
        est.fit(X, y)
    update = int(re.search(r"at model update (\d+)", str(info.value)).group(1))
    assert torch.isfinite(weights(est)).all()
    # the weights are those the failing update started from (an adaptive
    # schedule may stop before it begins, when it asks for its batch size)
    assert len(stepped) == update
    assert torch.equal(weights(est), stepped[update - 1])


def test_schedule_reading_a_non_finite_first_loss_stops_before_training(client, data):
    X, _ = data
    # float32 overflows: MSE of outputs near 1e21 is inf at the start.
    est = DaskRegressor(torch.nn.Linear, module__in_features=64, module__out_features=1,
                        batch_size=AdaDamp(initial=10), train_split=None,
                        random_state=0, verbose=0)
    est.initialize()
    start = weights(est)
    with pytest.raises(FloatingPointError, match=(
            r"the training loss the schedule reads is not finite \(loss inf\) at "
            r"model update 1 \(epoch 1\)")):
        est.fit(X * 1e20, X[:, :1] * 1e20)
    assert torch.equal(weights(est), start)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_cpu_workers_is_refused_before_placing_data(client, data):
    est = make_classifier(device="cuda")
    est.initialize()  # the client falls back to its CPU
    assert est.device == "cuda" and weights(est).device.type == "cpu"
    with pytest.raises(ValueError, match=r"device='cuda' is not available on the workers"):
        est.fit(*data)


def test_non_finite_regression_target(untouched_cluster, data):
    X, _ = data
    y = X[:, :1].copy()
    y[5, 0] = np.nan
    with pytest.raises(ValueError, match=r"y contains NaN or infinite values .*index \(5, 0\)"):
        DaskRegressor(MLP, module__n_features=64, module__n_classes=1,
                      train_split=None).fit(X, y)


def test_non_finite_dask_regression_target(client, data):
    X, _ = data
    y = X[:, :1].copy()
    y[5, 0] = np.inf
    with pytest.raises(ValueError, match="y contains NaN or infinite values"):
        DaskRegressor(MLP, module__n_features=64, module__n_classes=1, train_split=None,
                      max_epochs=1).fit(da.from_array(X, chunks=10), da.from_array(y, chunks=10))


def test_dask_arrays_of_unknown_chunk_sizes_train(client, data):
    """After boolean indexing a dask array's chunk sizes are unknown: the
    fit measures them where the blocks are, and trains on the same rows."""
    X, y = data
    keep = X[:, 1] > -0.5
    Xd, yd = da.from_array(X, chunks=10), da.from_array(y, chunks=10)
    Xm, ym = Xd[da.from_array(keep, chunks=10)], yd[da.from_array(keep, chunks=10)]
    assert np.isnan(Xm.shape[0])
    kwargs = dict(batch_size=16, grads_per_worker=8, max_epochs=2)
    est = make_classifier(**kwargs).fit(Xm, ym)
    known = make_classifier(**kwargs).fit(Xm.compute_chunk_sizes(), ym.compute_chunk_sizes())
    assert est.history[0, "n_examples"] == int(keep.sum())
    assert torch.equal(weights(est), weights(known))
