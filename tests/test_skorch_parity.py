"""skorch's customisation points work on the workers: the same weights as
skorch's own nets where skorch computes the same thing, and clear errors
where the Dask classes cannot."""
import copy
import warnings

import cloudpickle
import dask.array as da
import numpy as np
import pytest
import scipy.sparse
import torch
from skorch import NeuralNetRegressor
from skorch.callbacks import BatchScoring, EpochScoring
from skorch.dataset import Dataset, ValidSplit
from skorch.toy import make_classifier as make_classifier_module
from skorch.utils import FirstStepAccumulator

from dask_adadamp import DaskClassifier, DaskRegressor

from helpers import make_classifier, weights


# The workers unpickle this module's classes by value.
pytestmark = pytest.mark.usefixtures("module_by_value")


@pytest.fixture(scope="module")
def linear_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 5)).astype("float32")
    y = (X @ rng.normal(size=(5, 1)) + 0.1 * rng.normal(size=(100, 1))).astype("float32")
    return X, y


PARAMS = dict(module=torch.nn.Linear, module__in_features=5, module__out_features=1,
              lr=0.1, max_epochs=5, batch_size=-1, train_split=None, verbose=0)


def fit_both(dask_cls, skorch_cls, X, y, client, **kwargs):
    """A full-batch fit of the Dask class, and of the skorch class from the
    same initial weights."""
    params = {**PARAMS, **kwargs}
    ours = dask_cls(**params, random_state=0, grads_per_worker=32, client=client)
    ours.initialize()
    start = copy.deepcopy({name: getattr(ours, name + "_").state_dict()
                           for name in ours._modules})
    ours.partial_fit(X, y)
    theirs = skorch_cls(**params).initialize()
    for name, state in start.items():
        getattr(theirs, name + "_").load_state_dict(state)
    theirs.partial_fit(X, y)
    return ours, theirs


def all_weights(net):
    return torch.cat([p.detach().flatten() for _, p in net.get_all_learnable_params()])


class L2Mixin:
    def get_loss(self, y_pred, y_true, X=None, training=False):
        loss = super().get_loss(y_pred, y_true, X=X, training=training)
        return loss + 0.5 * sum((p ** 2).sum() for p in self.module_.parameters())


class DaskL2(L2Mixin, DaskRegressor):
    pass


class SkorchL2(L2Mixin, NeuralNetRegressor):
    pass


def test_get_loss_override_trains_as_in_skorch(client, linear_data):
    X, y = linear_data
    # 100 rows in chunks of at most 32: the penalty counts once per batch.
    ours, theirs = fit_both(DaskL2, SkorchL2, X, y, client)
    plain, _ = fit_both(DaskRegressor, NeuralNetRegressor, X, y, client)
    torch.testing.assert_close(all_weights(ours), all_weights(theirs), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(all_weights(ours), all_weights(plain), atol=1e-3)
    assert ours.history[-1, "train_loss"] == pytest.approx(theirs.history[-1, "train_loss"],
                                                           rel=1e-5)
    # batch_size=-1: one update per epoch, as skorch's one batch.
    assert ours.history[-1, "model_updates"] == 5


class TwoModulesMixin:
    def initialize_module(self):
        super().initialize_module()
        self.head_ = torch.nn.Linear(1, 1)
        return self

    def infer(self, x, **fit_params):
        return self.head_(super().infer(x, **fit_params))


class DaskTwo(TwoModulesMixin, DaskRegressor):
    pass


class SkorchTwo(TwoModulesMixin, NeuralNetRegressor):
    pass


def test_extra_modules_and_infer_override_train_as_in_skorch(client, linear_data):
    X, y = linear_data
    ours, theirs = fit_both(DaskTwo, SkorchTwo, X, y, client)
    assert len(all_weights(ours)) == 5 + 1 + 1 + 1
    torch.testing.assert_close(all_weights(ours), all_weights(theirs), rtol=1e-5, atol=1e-6)


class ModeLoss(torch.nn.MSELoss):
    """No gradient in eval mode: training in eval mode leaves the weights."""

    def forward(self, y_pred, y_true):
        return super().forward(y_pred, y_true) * (1.0 if self.training else 0.0)


def test_criterion_trains_in_train_mode_after_validation(client, linear_data):
    X, y = linear_data
    params = {**PARAMS, "train_split": ValidSplit(5), "max_epochs": 1}
    est = DaskRegressor(**params, criterion=ModeLoss, random_state=0,
                        client=client).fit(X, y)
    assert not est.criterion_.training  # validation ran last, on the client
    before = weights(est)
    est.partial_fit(X, y)
    assert not torch.equal(weights(est), before)
    assert est.history[-1, "train_loss"] > 0


class LazyMLP(torch.nn.Module):
    def __init__(self, **ignored):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.LazyLinear(8), torch.nn.ReLU(),
                                          torch.nn.LazyLinear(2))

    def forward(self, X):
        return self.layers(X)


def test_lazy_modules_are_seeded(client, small_data):
    X, y = small_data
    fits = [make_classifier(module=LazyMLP, client=client).fit(X, y) for _ in range(2)]
    assert torch.equal(weights(fits[0]), weights(fits[1]))
    other = make_classifier(module=LazyMLP, client=client, random_state=1).fit(X, y)
    assert not torch.equal(weights(fits[0]), weights(other))


class RowIndexModule(torch.nn.Module):
    """Checks that each row's fit parameter came with it: X[:, 0] holds the
    row's number, as does ``row``."""

    def __init__(self, **ignored):
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)

    def forward(self, X, row, scale=1.0):
        if not torch.equal(X[:, 0], torch.as_tensor(row, dtype=X.dtype)):
            raise AssertionError("fit parameter rows do not match X's")
        return self.linear(X) * scale


def test_per_example_fit_params_follow_their_rows(client):
    n = 200
    X = np.stack([np.arange(n), np.ones(n)], axis=1).astype("float32")
    y = (np.arange(n) % 2).astype("int64")
    est = make_classifier(module=RowIndexModule, client=client, batch_size=50,
                          grads_per_worker=16, lr=1e-4)
    est.fit(X, y, row=np.arange(n), scale=0.5)
    assert est.history[-1, "model_updates"] == 8
    # skorch hands fit parameters to train_split too. A split that makes
    # datasets of its own leaves the training rows of `row` unknown.
    def split(dataset, y=None, **fit_params):
        return Dataset(dataset.X[:150], dataset.y[:150]), None

    with pytest.raises(ValueError, match=r"fit parameters \['row'\] .*training rows are unknown"):
        make_classifier(module=RowIndexModule, client=client,
                        train_split=split).fit(X, y, row=np.arange(n))


def test_iterator_train_batch_size_sets_the_batch(client, small_data):
    X, y = small_data
    est = make_classifier(client=client, iterator_train__batch_size=10,
                          iterator_train__shuffle=True, max_epochs=1).fit(X, y)
    assert est.history[-1, "model_updates"] == 30


@pytest.mark.parametrize("setting, name", [
    ({"iterator_train__num_workers": 2}, "iterator_train__num_workers=2"),
    ({"iterator_train__shuffle": False}, "iterator_train__shuffle=False"),
    ({"iterator_train": torch.utils.data.Dataset}, "iterator_train=<class"),
    ({"iterator_train__batch_size": 0}, "iterator_train__batch_size=0"),
])
def test_other_iterator_train_settings_are_refused(small_data, setting, name):
    with pytest.raises(ValueError, match=rf"{name}.* is not accepted"):
        make_classifier(**setting).fit(*small_data)


def test_sparse_X_trains_as_dense(client, small_data):
    X, y = small_data
    X = X * (np.abs(X) > 1)  # mostly zeros
    dense = make_classifier(client=client).fit(X, y)
    sparse = make_classifier(client=client).fit(scipy.sparse.csr_matrix(X), y)
    assert torch.equal(weights(dense), weights(sparse))


def test_epoch_scoring_on_train_turns_caching_off(client, small_data):
    X, y = small_data
    scoring = EpochScoring("accuracy", on_train=True, name="train_acc")
    est = make_classifier(client=client, callbacks=[scoring])
    with pytest.warns(UserWarning, match=r"\['train_acc'\] .*computed without caching"):
        est.fit(X, y)
    assert 0 <= est.history[-1, "train_acc"] <= 1
    assert scoring.use_caching  # the user's callback is left as it was


def test_batch_scoring_on_train_scores_each_update_as_skorch_uncached(client, linear_data):
    X, y = linear_data
    # Full batches: skorch's one batch per epoch holds the same rows.
    score = BatchScoring("neg_mean_squared_error", on_train=True, name="nmse",
                         use_caching=False)
    ours, theirs = fit_both(DaskRegressor, NeuralNetRegressor, X, y, client,
                            callbacks=[score])
    # scored after each step, with the weights it left, as in skorch
    np.testing.assert_allclose(ours.history[:, "nmse"], theirs.history[:, "nmse"],
                               rtol=1e-5)
    assert len(ours.history[-1, "batches", :, "nmse"]) == 1


def test_batch_scoring_on_train_turns_caching_off(client, small_data):
    X, y = small_data
    score = BatchScoring("accuracy", on_train=True, name="train_acc")
    est = make_classifier(client=client, callbacks=[score], max_epochs=1)
    with pytest.warns(UserWarning, match=r"\['train_acc'\] .*computed without caching"):
        est.fit(X, y)
    # one score per update, each of its own rows
    batches = est.history[-1, "batches"]
    assert len(batches) == 3 and all(0 <= b["train_acc"] <= 1 for b in batches)
    assert score.use_caching  # the user's callback is left as it was


def test_batch_scoring_on_train_with_dask_arrays_is_refused(client, small_data):
    X, y = (da.from_array(a, chunks=100) for a in small_data)
    est = make_classifier(client=client, callbacks=[
        ("rows_acc", BatchScoring("accuracy", on_train=True, use_caching=False))])
    with pytest.raises(ValueError, match=r"callbacks \['rows_acc'\]: BatchScoring"
                       r"\(on_train=True\) is not accepted with a dask array X"):
        est.fit(X, y)


class ThreeEvaluations(torch.optim.SGD):
    """Evaluates every update three times, as LBFGS evaluates one several."""

    def step(self, closure=None):
        for _ in range(3):
            loss = super().step(closure)
        return loss


class EveryEvaluation(FirstStepAccumulator):
    def __init__(self, losses):
        super().__init__()
        self.losses = losses

    def store_step(self, step):
        super().store_step(step)
        self.losses.append(float(step["loss"]))


class RecordsEvaluations(DaskClassifier):
    def get_train_step_accumulator(self):
        return EveryEvaluation(self.evaluation_losses)


def test_each_evaluation_of_an_update_draws_new_dropout_masks(client, small_data):
    def losses():
        est = RecordsEvaluations(
            make_classifier_module(input_units=64, dropout=0.5), client=client,
            optimizer=ThreeEvaluations, lr=0.0, batch_size=-1, max_epochs=1,
            train_split=None, random_state=0, verbose=0)
        est.evaluation_losses = []
        est.fit(*small_data)
        return est.evaluation_losses

    first = losses()
    # the same weights (lr=0) evaluated three times: new masks each time, as
    # in skorch, and the same three again in a fit with the same random_state
    assert len(set(first)) == 3
    assert losses() == first


class MeanOutput:
    """A criterion that is not a torch module (skorch accepts any callable)."""

    def __call__(self, y_pred, y_true):
        return ((y_pred - y_true) ** 2).mean()


def test_target_that_broadcasts_warns_as_in_skorch(client, small_data):
    # torch only warns when MSELoss broadcasts a (n,) target against (n, 1)
    # outputs, and skorch passes that warning on; so do the Dask classes,
    # once for the training data (the workers' copies stay in their logs)
    # and once for validation, as skorch's own test counts. Each update is
    # one chunk here (a batch of 128 in shards of 128 rows), which computes
    # the loss as skorch does (tests/test_recipes.py refuses more chunks).
    X, _ = small_data
    est = DaskRegressor(torch.nn.Linear, module__in_features=64,
                        module__out_features=1, max_epochs=1, random_state=0,
                        client=client)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(X, X[:, 0])
    broadcast = [str(w.message) for w in caught if "broadcasting" in str(w.message)]
    assert len(broadcast) == 2, broadcast
    # the rows passed (the training split has 4/5 of them)
    assert broadcast[0].startswith("y of shape (300,) against outputs of shape (n, 1): ")


def test_checkpoint_pickles_the_net_during_a_fit(client, small_data, tmp_path):
    # skorch's Checkpoint(f_pickle=...) pickles the whole net in
    # on_epoch_end, while the fit's session on the cluster is open.
    from skorch.callbacks import Checkpoint
    X, y = small_data
    est = make_classifier(callbacks=[Checkpoint(
        monitor=None, f_pickle="net.pkl", f_params=None, f_optimizer=None,
        f_criterion=None, f_history=None, dirname=str(tmp_path))]).fit(X, y)
    loaded = cloudpickle.loads((tmp_path / "net.pkl").read_bytes())
    np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))


def test_criterion_that_is_not_a_module(client, linear_data):
    X, y = linear_data
    ours, theirs = fit_both(DaskRegressor, NeuralNetRegressor, X, y, client,
                            criterion=MeanOutput)
    torch.testing.assert_close(all_weights(ours), all_weights(theirs), rtol=1e-5, atol=1e-6)


class OneItem(torch.utils.data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return torch.zeros(64)


def test_dataset_with_one_item_gets_skorchs_message(small_data):
    from skorch.dataset import ERROR_MSG_1_ITEM
    with pytest.raises(ValueError, match=ERROR_MSG_1_ITEM[:40]):
        make_classifier().fit(OneItem(), None)


def test_unpicklable_attribute_is_named(client, small_data):
    est = make_classifier(client=client)
    est.initialize()
    est.my_lock_ = __import__("threading").Lock()
    with pytest.raises(TypeError, match=r"\['my_lock_'\] cannot be pickled"):
        est.partial_fit(*small_data)


def test_sum_reduced_criterion_trains_as_in_skorch(client, linear_data):
    X, y = linear_data
    ours, theirs = fit_both(DaskRegressor, NeuralNetRegressor, X, y, client,
                            criterion__reduction="sum", lr=0.001)
    torch.testing.assert_close(all_weights(ours), all_weights(theirs), rtol=1e-5, atol=1e-6)
    assert ours.history[-1, "train_loss"] == pytest.approx(theirs.history[-1, "train_loss"],
                                                           rel=1e-5)


def test_method_replaced_on_the_net_stays_on_the_client(client, small_data):
    est = make_classifier(client=client)
    est.initialize()
    lock = __import__("threading").Lock()
    est.score = lambda X, y=None: lock and 1.0  # holds an unpicklable lock
    est.partial_fit(*small_data)
    assert est.score(None) == 1.0
    est.get_loss = lambda *a, **k: lock
    with pytest.raises(TypeError, match=r"\['get_loss'\] cannot be pickled"):
        est.partial_fit(*small_data)


class TwoInputs(torch.nn.Module):
    def __init__(self, **ignored):
        super().__init__()
        self.a = torch.nn.Linear(3, 1)
        self.b = torch.nn.Linear(2, 1)

    def forward(self, left, right):
        return self.a(left) + self.b(right)


def test_dict_X_trains_as_in_skorch(client, linear_data):
    X, y = linear_data
    X = {"left": X[:, :3], "right": X[:, 3:]}
    ours, theirs = fit_both(DaskRegressor, NeuralNetRegressor, X, y, client,
                            module=TwoInputs)
    torch.testing.assert_close(all_weights(ours), all_weights(theirs), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="^X and fit_params contain duplicate keys: right$"):
        ours.fit(X, y, right=1)
