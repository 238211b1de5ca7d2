"""Batch-size schedules: the formulas as a fit applies them, and the
scikit-learn / skorch contract of a schedule as a parameter."""
import math
import pickle

import numpy as np
import pytest
import torch
from distributed import Client
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from skorch.callbacks import Callback, Checkpoint

from dask_adadamp.dampers import (AdaDamp, Constant, GeoDamp, GeoDampLR,
                                  GradientDescent, NoiseScaleDamp, PadaDamp,
                                  Progress, RadaDamp, UpdateStats)
from dask_adadamp._engine import FitSession
from helpers import make_classifier, weights

LR = 0.1


def applied(est):
    """(batch size, lr / LR) of every update, read back from the history."""
    return [(b["batch_size"], pytest.approx(b["lr"] / LR, rel=1e-12))
            for epoch in est.history for b in epoch["batches"]]


def by_hand(n, epochs, asked, max_batch_size=None, lr_factor=lambda e: 1.0):
    """Every update's (batch size, lr factor) from a formula ``asked(k, e)``:
    epochs of ``n`` examples, the last update of an epoch takes the rest,
    and past ``max_batch_size`` the size stops and the lr shrinks."""
    out, k = [], 0
    for e in range(epochs):
        left = n
        while left:
            want = asked(k, e)
            size, factor = min(want, n), lr_factor(e)
            if max_batch_size is not None and want > max_batch_size:
                size, factor = max_batch_size, factor * max_batch_size / want
            out.append((min(size, left), factor))
            left -= out[-1][0]
            k += 1
    return out


@pytest.mark.parametrize("batch_size, kwargs, asked, lr_factor", [
    (96, {}, lambda k, e: 96, lambda e: 1.0),
    (Constant(70), {}, lambda k, e: 70, lambda e: 1.0),
    (GeoDamp(initial=16, factor=3, delay=2), {},
     lambda k, e: 16 * 3 ** (e // 2), lambda e: 1.0),
    (GeoDampLR(initial=64, factor=4, delay=1), {},
     lambda k, e: 64, lambda e: 4.0 ** -e),
    (PadaDamp(initial=8, rate=2.5), {"max_batch_size": 40},
     lambda k, e: math.ceil(8 + 2.5 * k), lambda e: 1.0),
    (GradientDescent(), {}, lambda k, e: 300, lambda e: 1.0),
    (GradientDescent(), {"max_batch_size": 128}, lambda k, e: 300, lambda e: 1.0),
])
def test_passive_schedules_follow_their_formula(client, small_data, batch_size,
                                                kwargs, asked, lr_factor):
    X, y = small_data
    est = make_classifier(batch_size=batch_size, lr=LR, max_epochs=4,
                          grads_per_worker=32, **kwargs).fit(X, y)
    assert applied(est) == by_hand(len(X), 4, asked, kwargs.get("max_batch_size"),
                                   lr_factor)
    h = est.history
    assert h[-1, "model_updates"] == len(applied(est))
    assert h[-1, "n_examples"] == 4 * len(X)


class TrainingLoss(Callback):
    """F(w) on the client before every update, from the full training set."""

    def __init__(self, X, y):
        self.X, self.y = torch.as_tensor(X), torch.as_tensor(y)

    def on_batch_begin(self, net, training=False, **kwargs):
        if training:
            net.module_.eval()
            with torch.no_grad():
                loss = net.criterion_(net.module_(self.X), self.y)
            net.history.record_batch("F", float(loss))


def test_adadamp_batch_follows_the_training_loss(client, small_data, monkeypatch):
    X, y = small_data
    est = make_classifier(batch_size=AdaDamp, batch_size__initial=8,
                          batch_size__loss_min=0.05, lr=LR, max_epochs=3,
                          grads_per_worker=32,
                          callbacks=[("F", TrainingLoss(X, y))])
    # One round of calls per update: only F(w_0) is evaluated on its own.
    rounds = []
    mean_loss = FitSession.mean_loss
    monkeypatch.setattr(FitSession, "mean_loss",
                        lambda *a, **k: rounds.append(1) or mean_loss(*a, **k))
    est.fit(X, y)
    assert len(rounds) == 1
    F0 = est.history[0, "batches", 0, "F"]
    # Update k's size comes from the loss at update k-1's weights, evaluated
    # in k-1's calls (the first from F(w_0)).
    Fs = [b["F"] for epoch in est.history for b in epoch["batches"]]
    used = iter([F0] + Fs[:-1])
    for epoch in est.history:
        for i, b in enumerate(epoch["batches"]):
            ratio = (F0 - 0.05) / (next(used) - 0.05)
            assert b["loss_ratio"] == pytest.approx(ratio, rel=1e-4)
            want = math.ceil(8 * b["loss_ratio"])
            if i < len(epoch["batches"]) - 1:
                assert b["batch_size"] == want
            else:  # the rest of the epoch
                assert b["batch_size"] <= want
    batches = [b for epoch in est.history for b in epoch["batches"]]
    sizes = [b["batch_size"] for b in batches]
    assert sizes[0] == 8 and max(sizes) > 4 * 8  # it grew as the loss fell
    assert est.history[-1, "loss_ratio"] == batches[-1]["loss_ratio"]
    # Every update read the whole training set for the loss, the first twice
    # (F(w_0) in a round of its own, then F(w_1) in its calls).
    n = len(X)
    assert [b["loss_examples"] for b in batches] == [2 * n] + [n] * (len(batches) - 1)
    assert est.history[-1, "loss_examples"] == n * (len(batches) + 1)
    assert est.history[-1, "n_examples"] == sum(sizes)


def test_dwell_holds_the_batch_size(client, small_data):
    X, y = small_data
    est = make_classifier(batch_size=AdaDamp(initial=8, dwell=4, approx=0.5),
                          lr=LR, max_epochs=2, grads_per_worker=32).fit(X, y)
    batches = [b for epoch in est.history for b in epoch["batches"]]
    ratios = [b["loss_ratio"] for b in batches]
    # asked at updates 0, 4, 8, ...: the signal changes only there
    for k in range(1, len(ratios)):
        if k % 4:
            assert ratios[k] == ratios[k - 1]
    assert len(set(ratios)) == math.ceil(len(ratios) / 4)
    # The loss was read on half the rows, at F(w_0) and every 4th update.
    read = [b["loss_examples"] for b in batches]
    assert read[0] > 0 and all(r == 0 for k, r in enumerate(read) if k % 4 != 3
                               and k != 0)
    assert sum(read) == est.history[-1, "loss_examples"] < len(batches) * len(X)


def test_noise_scale_and_rada_batches_follow_their_signal(client, small_data):
    X, y = small_data
    for damper in (NoiseScaleDamp(initial=16, scale=0.5),
                   RadaDamp(initial=16, rho=0.5)):
        est = make_classifier(batch_size=damper, lr=LR, max_epochs=3,
                              grads_per_worker=32).fit(X, y)
        name = damper.signal_name
        batches = [(b, i == len(epoch["batches"]) - 1) for epoch in est.history
                   for i, b in enumerate(epoch["batches"])]
        assert all(name in b for b, _ in batches)
        for (prev, _), (b, last_of_epoch) in zip(batches, batches[1:]):
            if isinstance(damper, NoiseScaleDamp):
                if prev[name] == math.inf:  # no estimate: held (tested below)
                    continue
                want = max(16, math.ceil(0.5 * prev[name]))
            else:
                want = math.ceil(16 * max(1.0, prev[name]))
            want = min(want, len(X))
            # the last update of an epoch takes what is left
            assert b["batch_size"] <= want if last_of_epoch else b["batch_size"] == want
        assert len({b["batch_size"] for b, last in batches if not last}) > 1


def test_noise_scale_estimates_are_unbiased():
    """Chunks of known noise: the smoothed estimates find tr(S) and |G|^2."""
    rng = np.random.default_rng(0)
    G, sigma, dim = np.full(10, 0.3), 2.0, 10  # tr(S) = 40, |G|^2 = 0.9
    damper = NoiseScaleDamp(initial=8, beta=0.999)
    for _ in range(3000):
        sizes = [32, 32, 16]  # unequal chunks are weighted by size
        means = [G + sigma * rng.normal(size=dim) / math.sqrt(b) for b in sizes]
        total = sum(sizes)
        g_B = sum(b * m for b, m in zip(sizes, means)) / total
        damper.observe(UpdateStats(total, 1.0, float(g_B @ g_B), sizes,
                                   [float(m @ m) for m in means]))
    assert damper.trace_avg_ / damper.grad_sq_avg_ == pytest.approx(40 / 0.9, rel=0.15)
    assert damper.signal_ == damper.trace_avg_ / damper.grad_sq_avg_
    # One chunk gives no estimate: the last one is kept.
    before = damper.state_dict()
    damper.observe(UpdateStats(1, 1.0, 1.0, [1], [1.0]))
    assert damper.state_dict() == before


def test_updates_of_noise_scale_damp_run_two_tasks_at_least(client, small_data):
    X, y = small_data
    est = make_classifier(batch_size=NoiseScaleDamp(initial=16, scale=1e-9),
                          grads_per_worker=64, max_epochs=1).fit(X, y)
    # every update of 16 < grads_per_worker examples still gave an estimate
    batches = est.history[0, "batches"]
    assert {b["batch_size"] for b in batches[:-1]} == {16}
    assert all(np.isfinite(b["noise_scale"]) or b["noise_scale"] == math.inf
               for b in batches)


def test_schedule_parameters_route_like_skorch(client, small_data):
    X, y = small_data
    a = make_classifier(batch_size=GeoDamp, batch_size__initial=24,
                        batch_size__factor=2, batch_size__delay=1).fit(X, y)
    b = make_classifier(batch_size=GeoDamp(initial=24, factor=5, delay=1),
                        batch_size__factor=2).fit(X, y)
    assert a.damper_.get_params() == b.damper_.get_params() == {
        "initial": 24, "factor": 2, "delay": 1}
    assert applied(a) == applied(b)
    torch.testing.assert_close(weights(a), weights(b), rtol=0, atol=0)
    # the user's instance is a parameter: never changed by a fit
    assert b.batch_size.factor == 5 and not hasattr(b.batch_size, "requested_")
    # set_params on a fitted estimator takes effect at once
    b.set_params(batch_size__initial=48)
    assert b.damper_.initial == 48
    c = make_classifier(batch_size=GeoDamp(initial=24), max_epochs=1).fit(X, y)
    c.set_params(batch_size=64)
    assert isinstance(c.damper_, Constant) and c.damper_.initial == 64
    assert c.fit(X, y).history[-1, "batch_size"] == 64


def test_clone_pickle_and_grid_search_over_schedule_parameters(client, small_data):
    X, y = small_data
    est = make_classifier(batch_size=GeoDamp(initial=16, factor=2, delay=1),
                          max_epochs=2)
    cloned = clone(est)
    assert cloned.batch_size is not est.batch_size
    assert cloned.batch_size.get_params() == est.batch_size.get_params()
    search = GridSearchCV(est, {"batch_size__factor": [1, 4]}, cv=2,
                          refit=False).fit(X, y)
    assert [p["batch_size__factor"] for p in search.cv_results_["params"]] == [1, 4]
    est.fit(X, y)
    restored = pickle.loads(pickle.dumps(est))
    assert restored.damper_.state_dict() == est.damper_.state_dict()
    np.testing.assert_array_equal(restored.predict(X), est.predict(X))


def test_schedule_state_survives_checkpoint_and_resume(client, small_data, tmp_path):
    X, y = small_data

    def make(**kwargs):
        return make_classifier(batch_size=NoiseScaleDamp(initial=16, scale=0.3),
                               optimizer__momentum=0.9, grads_per_worker=32, **kwargs)

    straight = make(max_epochs=4).fit(X, y)
    first = make(max_epochs=2, callbacks=[("cp", Checkpoint(
        monitor=None, dirname=str(tmp_path), f_damper="damper.pt", f_optimizer="opt.pt",
        f_params="params.pt", f_history="history.json"))]).fit(X, y)
    assert first.damper_.state_dict()["seen_"] > 0
    resumed = make(max_epochs=2).initialize()
    resumed.load_params(f_params=tmp_path / "params.pt", f_optimizer=tmp_path / "opt.pt",
                        f_history=tmp_path / "history.json",
                        f_damper=tmp_path / "damper.pt")
    assert resumed.damper_.state_dict() == first.damper_.state_dict()
    resumed.partial_fit(X, y)
    assert applied(resumed) == applied(straight)
    torch.testing.assert_close(weights(resumed), weights(straight), rtol=0, atol=0)


def test_adaptive_schedules_do_not_depend_on_the_number_of_workers(
        client, shared_cluster, small_data):
    X, y = small_data
    with Client(shared_cluster(1)) as client_one:
        runs = [make_classifier(batch_size=damper, client=c, max_epochs=2,
                                grads_per_worker=32).fit(X, y)
                for damper in (AdaDamp(initial=8), NoiseScaleDamp(initial=8))
                for c in (client_one, client)]
    for a, b in (runs[:2], runs[2:]):
        assert applied(a) == applied(b)
        torch.testing.assert_close(weights(a), weights(b), rtol=0, atol=0)


@pytest.mark.parametrize("params, message", [
    ({"batch_size": "auto"}, "batch_size='auto' is not accepted"),
    ({"batch_size": torch.nn.Linear}, "schedule from dask_adadamp.dampers"),
    ({"batch_size": GeoDamp(factor=0.5)}, r"GeoDamp\(factor=0.5\) is not accepted"),
    ({"batch_size": NoiseScaleDamp(beta=1)}, "beta must be a number in"),
    ({"batch_size": AdaDamp(approx=0)}, "approx must be None or a number"),
    ({"batch_size": 64, "batch_size__factor": 2}, "need a schedule"),
    ({"batch_size": GeoDamp, "batch_size__speed": 2}, "do not fit GeoDamp"),
    ({"batch_size": GeoDamp(), "batch_size__speed": 2}, "Invalid parameter 'speed'"),
    ({"max_batch_size": 0}, "max_batch_size=0 is not accepted"),
])
def test_bad_schedules_are_refused_before_training(client, small_data, params, message):
    X, y = small_data
    with pytest.raises(ValueError, match=message):
        make_classifier(**params).fit(X, y)


def test_formulas_without_a_fit():
    p = Progress(updates=0, epochs=0, n_train=100, loss=lambda fraction=None: 2.0)
    damper = AdaDamp(initial=10, loss_min=1.0)
    assert damper.ask(p) == 10
    p = p._replace(updates=1, loss=lambda fraction=None: 1.25)
    assert damper.ask(p) == 40 and damper.signal_ == 4.0
    p = p._replace(updates=2, loss=lambda fraction=None: 0.5)  # below F*
    assert damper.ask(p) > 1e18  # the estimator caps it
    damper.reset()
    assert damper.state_dict() == {}
    assert GeoDamp(initial=5, factor=1.5, delay=1).ask(p._replace(epochs=2)) == 12
    noise = NoiseScaleDamp(initial=4, scale=0.5, beta=0.0)  # no smoothing
    assert noise.ask(p._replace(updates=0)) == 4
    noise.observe(UpdateStats(20, 1.0, 0.01, [10, 10], [2.01, 2.01]))  # |G|^2 < 0
    assert noise.signal_ == math.inf and noise.ask(p._replace(updates=1)) == 4
    noise.observe(UpdateStats(20, 1.0, 1.0, [10, 10], [1.5, 1.5]))
    # A = 1.5 - 1.0; tr(S) = 20 * A / 1 = 10; |G|^2 = 1.0 - A / 1 = 0.5
    assert noise.signal_ == pytest.approx(20.0)
    assert noise.ask(p._replace(updates=2)) == 10
