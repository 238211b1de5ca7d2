"""skorch's FAQ recipes on the Dask nets: the same weights as skorch's own
NeuralNetClassifier with the same recipe, whatever the chunks; clear errors,
raised on the client, where a customisation cannot run on the workers; and
scikit-learn pipelines, whose transformers hand the net float64 X."""
import copy

import numpy as np
import pytest
import torch
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback
from skorch.dataset import unpack_data
from skorch.utils import to_tensor
from sklearn.datasets import load_digits
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from dask_adadamp import DaskClassifier, DaskRegressor
from dask_adadamp.exceptions import CustomizationError, LossReductionError
from dask_adadamp.models import MLP

from helpers import adadamp_keys, weights

# Goal of issue 24: the recipes match skorch's weights to 1e-6.
ATOL = 1e-6


# The workers unpickle this module's classes by value.
pytestmark = pytest.mark.usefixtures("module_by_value")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(128, 8)).astype("float32")
    y = ((X[:, 0] + X[:, 1] > 0).astype("int64") + (X[:, 2] > 1)).astype("int64")
    w = rng.uniform(0, 2, size=128).astype("float32")
    return X, y, w


COMMON = dict(criterion=torch.nn.CrossEntropyLoss, lr=0.5, max_epochs=20,
              train_split=None, verbose=0)


class Chunks(Callback):
    """Records the number of chunks of every update (the batch a training
    update's callbacks get is the update itself)."""

    def __init__(self):
        self.counts = []

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        if training:
            self.counts.append(len(batch.chunks))


def fit_both(ours_cls, theirs_cls, X, y, client, grads_per_worker, **params):
    """A fit of the Dask class and of skorch's, from the same initial weights."""
    chunks = Chunks()
    params = {**COMMON, **params}
    ours = ours_cls(**params, client=client, random_state=0,
                    grads_per_worker=grads_per_worker, callbacks=[chunks]).initialize()
    start = copy.deepcopy(ours.module_.state_dict())
    ours.partial_fit(X, y)
    theirs = theirs_cls(**params).initialize()
    theirs.module_.load_state_dict(start)
    theirs.partial_fit(X, y)
    return ours, theirs, chunks.counts


def assert_same_training(ours, theirs):
    diff = float((weights(ours) - weights(theirs)).abs().max())
    assert diff <= ATOL, diff
    # (a sum's loss is large: float32 rounds it to about 1e-7 of itself)
    np.testing.assert_allclose(ours.history[:, "train_loss"],
                               theirs.history[:, "train_loss"], rtol=ATOL, atol=ATOL)


# --- gradient accumulation (skorch FAQ) --------------------------------------

class GradAccMixin:
    """skorch's FAQ recipe, as written there."""

    def __init__(self, *args, acc_steps=4, **kwargs):
        super().__init__(*args, **kwargs)
        self.acc_steps = acc_steps

    def get_loss(self, *args, **kwargs):
        loss = super().get_loss(*args, **kwargs)
        return loss / self.acc_steps  # normalize loss

    def train_step(self, batch, **fit_params):
        # note that n_train_batches starts at 1 for each epoch
        n_train_batches = len(self.history[-1, "batches"])
        step = self.train_step_single(batch, **fit_params)
        if n_train_batches % self.acc_steps == 0:
            self.optimizer_.step()
            self.optimizer_.zero_grad()
        return step


class DaskGradAcc(GradAccMixin, DaskClassifier):
    pass


class SkorchGradAcc(GradAccMixin, NeuralNetClassifier):
    pass


@pytest.mark.parametrize("grads_per_worker, n_chunks", [(32, 1), (16, 2)])
def test_gradient_accumulation_trains_as_in_skorch(client, data, grads_per_worker,
                                                   n_chunks):
    # 128 rows in batches of 32, a step every 4: one step per epoch, with
    # the whole epoch's gradient whichever rows each batch drew.
    X, y, _ = data
    ours, theirs, chunks = fit_both(
        DaskGradAcc, SkorchGradAcc, X, y, client, grads_per_worker,
        module=torch.nn.Linear, module__in_features=8, module__out_features=3,
        batch_size=32)
    assert set(chunks) == {n_chunks}
    assert_same_training(ours, theirs)
    # a train_step override keeps the history's update records
    assert ours.history[-1, "model_updates"] == 20 * 4


class Twice(DaskClassifier):
    """Computes every update's gradient twice before the step."""

    def train_step(self, batch, **fit_params):
        self.optimizer_.zero_grad()
        self.train_step_single(batch, **fit_params)
        once = torch.cat([p.grad.flatten().clone() for p in self.module_.parameters()])
        step = self.train_step_single(batch, **fit_params)
        twice = torch.cat([p.grad.flatten() for p in self.module_.parameters()])
        self.grads.append((once, twice))
        self.optimizer_.step()
        return step


def test_gradients_add_up_across_train_step_single_calls(client, data):
    X, y, _ = data
    est = Twice(torch.nn.Linear, module__in_features=8, module__out_features=3,
                **{**COMMON, "max_epochs": 1}, batch_size=64, grads_per_worker=32,
                client=client, random_state=0)
    est.grads = []
    est.fit(X, y)
    assert len(est.grads) == 2
    for once, twice in est.grads:  # as backward() twice: the sum
        assert torch.equal(twice, 2 * once)


# --- per-sample weights (skorch FAQ) ------------------------------------------

class WeightedModule(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(8, 3)

    def forward(self, data, sample_weight):
        # when X is a dict, its keys are passed as kwargs to forward
        return self.linear(data)


class WeightedMeanMixin:
    """skorch's FAQ recipe: the weighted losses' mean."""

    def get_loss(self, y_pred, y_true, X, *args, **kwargs):
        loss_unreduced = super().get_loss(y_pred, y_true, X, *args, **kwargs)
        sample_weight = to_tensor(X["sample_weight"], device=self.device)
        return (sample_weight * loss_unreduced).mean()


class WeightedSumMixin:
    def get_loss(self, y_pred, y_true, X, *args, **kwargs):
        loss_unreduced = super().get_loss(y_pred, y_true, X, *args, **kwargs)
        return (to_tensor(X["sample_weight"], device=self.device) * loss_unreduced).sum()


class DaskWeightedMean(WeightedMeanMixin, DaskClassifier):
    pass


class SkorchWeightedMean(WeightedMeanMixin, NeuralNetClassifier):
    pass


class DaskWeightedSum(WeightedSumMixin, DaskClassifier):
    pass


class SkorchWeightedSum(WeightedSumMixin, NeuralNetClassifier):
    pass


@pytest.mark.parametrize("grads_per_worker, n_chunks", [(128, 1), (64, 2), (32, 4)])
@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_sample_weights_train_as_in_skorch(client, data, grads_per_worker, n_chunks,
                                           reduce):
    X, y, w = data
    ours_cls, theirs_cls, lr = {
        "mean": (DaskWeightedMean, SkorchWeightedMean, 0.5),
        "sum": (DaskWeightedSum, SkorchWeightedSum, 0.5 / 128)}[reduce]
    ours, theirs, chunks = fit_both(
        ours_cls, theirs_cls, {"data": X, "sample_weight": w}, y, client,
        grads_per_worker, module=WeightedModule, criterion__reduction="none",
        batch_size=-1, lr=lr)
    assert set(chunks) == {n_chunks}
    assert_same_training(ours, theirs)


class WeightedByTotalMixin:
    """Weighted mean by the batch's sum of weights: not a mean over rows."""

    def get_loss(self, y_pred, y_true, X, *args, **kwargs):
        loss = super().get_loss(y_pred, y_true, X, *args, **kwargs)
        w = to_tensor(X["sample_weight"], device=self.device)
        return (w * loss).sum() / w.sum()


class DaskWeightedByTotal(WeightedByTotalMixin, DaskClassifier):
    pass


class SkorchWeightedByTotal(WeightedByTotalMixin, NeuralNetClassifier):
    pass


def test_loss_that_chunks_cannot_compute_trains_in_one_chunk_per_update(client, data):
    X, y, w = data
    ours, theirs, chunks = fit_both(
        DaskWeightedByTotal, SkorchWeightedByTotal, {"data": X, "sample_weight": w}, y,
        client, 128, module=WeightedModule, criterion__reduction="none",
        batch_size=-1)
    assert set(chunks) == {1}
    assert_same_training(ours, theirs)


def test_loss_that_chunks_cannot_compute_is_refused_in_more(client, data):
    X, y, w = data
    est = DaskWeightedByTotal(WeightedModule, criterion__reduction="none",
                              **COMMON, batch_size=-1, grads_per_worker=64,
                              client=client, random_state=0).initialize()
    start = weights(est)
    with pytest.raises(LossReductionError, match=r"DaskWeightedByTotal.get_loss cannot "
                       r"be computed in chunks exactly, and model update 1 \(epoch 1\) "
                       r"has 2 chunks.*\(w \* loss\).mean\(\)"):
        est.partial_fit({"data": X, "sample_weight": w}, y)
    assert torch.equal(weights(est), start)
    assert adadamp_keys(client) == []


def test_target_broadcast_against_the_outputs_is_refused_in_chunks(client, data):
    X, _, _ = data
    est = DaskRegressor(torch.nn.Linear, module__in_features=8, module__out_features=1,
                        lr=0.1, max_epochs=1, train_split=None, batch_size=64,
                        grads_per_worker=32, client=client, verbose=0)
    with pytest.warns(UserWarning, match="broadcasting"), \
            pytest.raises(LossReductionError, match=r"broadcasts y against the outputs"
                          r".*y.reshape\(-1, 1\)"):
        est.fit(X, X[:, 0])


# --- what cannot run on the workers, or on the client -------------------------

class WritesHistory(DaskClassifier):
    def get_loss(self, y_pred, y_true, *args, **kwargs):
        loss = super().get_loss(y_pred, y_true, *args, **kwargs)
        self.history.record_batch("my_loss", float(loss))
        return loss


class WritesHistoryOnLargeChunks(DaskClassifier):
    """Reaches the history only on more rows than the client's check uses:
    on a worker."""

    def get_loss(self, y_pred, y_true, *args, **kwargs):
        loss = super().get_loss(y_pred, y_true, *args, **kwargs)
        if len(y_true) > 3:
            self.history.record_batch("my_loss", float(loss))
        return loss


@pytest.mark.parametrize("cls", [WritesHistory, WritesHistoryOnLargeChunks])
def test_get_loss_that_writes_history_gets_a_clear_error(client, data, cls):
    X, y, _ = data
    est = cls(torch.nn.Linear, module__in_features=8, module__out_features=3,
              **COMMON, client=client)
    with pytest.raises(CustomizationError, match=rf"{cls.__name__}.history_ "
                       r"\(self.history\) stays on the client: infer and get_loss "
                       r"run on the Dask workers.*in a callback"):
        est.fit(X, y)
    assert adadamp_keys(client) == []


class TensorStep(DaskClassifier):
    """train_step_single as skorch's documentation writes it."""

    def train_step_single(self, batch, **fit_params):
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        y_pred = self.infer(Xi, **fit_params)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        loss.backward()
        return {"loss": loss, "y_pred": y_pred}


def test_train_step_single_that_expects_tensors_gets_a_clear_error(client, data):
    X, y, _ = data
    est = TensorStep(torch.nn.Linear, module__in_features=8, module__out_features=3,
                     **COMMON, client=client)
    with pytest.raises(CustomizationError, match=r"the batch of a Dask net's training "
                       r"step is an Update.*Override infer or get_loss instead"):
        est.fit(X, y)
    assert adadamp_keys(client) == []


class ClipsAfterSuper(DaskClassifier):
    """Works with .grad after the update's gradient, on the client."""

    def train_step_single(self, batch, **fit_params):
        step = super().train_step_single(batch, **fit_params)
        for p in self.module_.parameters():
            p.grad.zero_()
        return step


def test_train_step_single_that_calls_super_runs_on_the_client(client, data):
    X, y, _ = data
    est = ClipsAfterSuper(torch.nn.Linear, module__in_features=8, module__out_features=3,
                          **{**COMMON, "max_epochs": 1}, client=client,
                          random_state=0).initialize()
    start = weights(est)
    est.partial_fit(X, y)
    assert torch.equal(weights(est), start)  # every gradient zeroed before the step


# --- scikit-learn pipelines -------------------------------------------------

class DtypeOfPlacedX(Callback):
    """The dtype of the training rows on a worker, read there."""

    def on_batch_end(self, net, training=False, **kwargs):
        if training and not hasattr(self, "dtype"):
            shards = net._fit.session.shards
            key = shards.keys(0)[0]
            self.dtype = net._fit.session.client.run(
                lambda dask_worker: str(dask_worker.data[key].dtype),
                workers=[shards.holders[0]])[shards.holders[0]]


def digits_pipeline(client, *steps, **params):
    params = {**dict(module__n_features=64, module__hidden=32,
                     criterion=torch.nn.CrossEntropyLoss, lr=0.1, max_epochs=5,
                     batch_size=64, grads_per_worker=32, random_state=0, verbose=0,
                     client=client), **params}
    return Pipeline([*steps, ("net", DaskClassifier(MLP, **params))])


def test_pipeline_with_a_scaler_trains_on_float64_X(client):
    X, y = load_digits(return_X_y=True)  # float64, as StandardScaler's output
    X_train, y_train, X_test, y_test = X[:1437], y[:1437], X[1437:], y[1437:]
    placed = DtypeOfPlacedX()
    pipe = digits_pipeline(client, ("scale", StandardScaler()),
                           callbacks=[placed]).fit(X_train, y_train)
    # converted once, before placement: the workers hold float32 rows
    assert placed.dtype == "float32"
    assert pipe["net"].input_dtype_ == np.dtype("float32")
    assert pipe.score(X_test, y_test) > 0.8  # 10 classes
    # the same weights as converting X to float32 by hand
    by_hand = digits_pipeline(
        client, ("scale", StandardScaler()),
        ("float32", FunctionTransformer(lambda a: a.astype("float32")))).fit(X_train, y_train)
    assert by_hand["net"].input_dtype_ is None
    assert torch.equal(weights(pipe["net"]), weights(by_hand["net"]))
    np.testing.assert_array_equal(pipe.predict_proba(X_test),
                                  by_hand.predict_proba(X_test))


def test_X_that_does_not_fit_names_the_rows_passed(client):
    X, y = load_digits(return_X_y=True)
    # the default train_split trains on 4/5 of the 1437 rows; the message
    # names the rows passed
    pipe = digits_pipeline(client, ("scale", StandardScaler()), module__n_features=10)
    with pytest.raises(ValueError, match=r"X of shape \(1437, 64\) and dtype float64 "
                       r"does not fit the module MLP, as it is or converted to "
                       r"float32: mat1 and mat2 shapes cannot be multiplied"):
        pipe.fit(X[:1437], y[:1437])


def test_X_the_module_takes_as_it_is_stays_as_it_is(client):
    # an embedding takes int64 indices: no conversion
    class Bag(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bag = torch.nn.EmbeddingBag(10, 2)

        def forward(self, X):
            return self.bag(X)

    rng = np.random.default_rng(0)
    X = rng.integers(0, 10, size=(64, 3))
    y = (X[:, 0] > 4).astype("int64")
    est = DaskClassifier(Bag, **{**COMMON, "max_epochs": 1}, client=client).fit(X, y)
    assert est.input_dtype_ is None
    assert est.predict(X).shape == (64,)
