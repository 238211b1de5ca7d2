"""The time model of dask_adadamp.simulate against times computed by hand."""
import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest
from skorch.history import History

from dask_adadamp import DaskClassifier
from dask_adadamp.models import MLP
from dask_adadamp.simulate import Cluster, batch_sizes, simulate, update_seconds

# Round numbers, so that the hand computations below are easy to follow:
# 1000 float32 parameters are 4000 bytes, 1 ms at 4 MB/s.
GRAD_TIME, LATENCY, OVERHEAD = 1e-5, 1e-4, 0.02
N_PARAMS, BANDWIDTH = 1000, 4e6
TRANSFER = 4 * N_PARAMS / BANDWIDTH  # 1e-3 s
SIZES = [64, 64, 256]


def tiny_cluster(**kwargs):
    params = {"grad_time": GRAD_TIME, "grads_per_worker": 64, "max_workers": 2,
              "latency": LATENCY, "bandwidth": BANDWIDTH, "overhead": OVERHEAD}
    return Cluster(**{**params, **kwargs})


def tiny_history():
    """Two epochs of [64, 64] and [256], with a validation batch in the
    second (no ``batch_size``: not a model update)."""
    history = History()
    for epoch_sizes in ([64, 64], [256]):
        history.new_epoch()
        for size in epoch_sizes:
            history.new_batch()
            history.record_batch("train_loss", 1.0)
            history.record_batch("batch_size", size)
    history.new_batch()
    history.record_batch("valid_loss", 1.0)
    history.record_batch("valid_batch_size", 100)
    return history


def test_centralized_by_hand():
    # 64 examples: 1 worker computes 64; the weights go out to it and its
    # sum comes back.
    small = 64 * GRAD_TIME + 2 * (LATENCY + 1 * TRANSFER) + OVERHEAD
    # 256 examples: capped at 2 workers of 128 each; the client's link
    # carries 2 copies of the weights out and 2 sums back.
    large = 128 * GRAD_TIME + 2 * (LATENCY + 2 * TRANSFER) + OVERHEAD
    assert small == pytest.approx(0.00064 + 0.0022 + 0.02)
    assert large == pytest.approx(0.00128 + 0.0042 + 0.02)
    seconds = update_seconds(SIZES, N_PARAMS, tiny_cluster())
    np.testing.assert_allclose(seconds, [small, small, large])


def test_allreduce_by_hand():
    # One worker has nothing to reduce.
    small = 64 * GRAD_TIME + 0 + OVERHEAD
    # A ring of 2: 2 * (2 - 1) latencies, 2 * (2 - 1) / 2 of the gradient per link.
    large = 128 * GRAD_TIME + 2 * 1 * LATENCY + 2 * (1 / 2) * TRANSFER + OVERHEAD
    assert large == pytest.approx(0.00128 + 0.0012 + 0.02)
    seconds = update_seconds(SIZES, N_PARAMS, tiny_cluster(reduction="allreduce"))
    np.testing.assert_allclose(seconds, [small, small, large])


@pytest.mark.parametrize("reduction", ["centralized", "allreduce"])
def test_table_of_a_skorch_history(reduction):
    cluster = tiny_cluster(reduction=reduction)
    table = simulate({"tiny": tiny_history()}, N_PARAMS, cluster)
    row = table.loc["tiny"]
    assert table.index.name == "schedule"
    assert row["model_updates"] == 3
    assert row["epochs"] == 2
    assert row["examples"] == 384
    assert row["max_workers"] == 2
    seconds = update_seconds(SIZES, N_PARAMS, cluster)
    assert row["minutes"] == pytest.approx(seconds.sum() / 60)
    assert row["minutes"] == pytest.approx(
        row["compute_minutes"] + row["communication_minutes"] + row["overhead_minutes"])
    assert row["overhead_minutes"] == pytest.approx(3 * OVERHEAD / 60)


def test_batch_sizes_from_histories():
    history = tiny_history()
    assert batch_sizes(history) == SIZES
    assert batch_sizes(list(history)) == SIZES  # plain list of dicts
    assert batch_sizes(SimpleNamespace(history=history)) == SIZES  # an estimator


def test_estimator_history_list_and_sizes_agree():
    cluster = tiny_cluster()
    table = simulate({"history": tiny_history(),
                      "estimator": SimpleNamespace(history=tiny_history()),
                      "sizes": SIZES}, N_PARAMS, cluster, n_train=128)
    assert table["minutes"].nunique() == 1
    assert list(table["epochs"]) == [2, 2, 2]


def test_epochs_of_a_list_need_n_train():
    table = simulate({"sizes": [100, 100, 50]}, N_PARAMS, tiny_cluster())
    assert math.isnan(table.loc["sizes", "epochs"])
    table = simulate({"sizes": [100, 100, 50]}, N_PARAMS, tiny_cluster(), n_train=100)
    assert table.loc["sizes", "epochs"] == 2.5


def test_worker_minutes_by_hand():
    """A cluster that follows the batch holds each update's workers for its
    time: [64, 64] on 1 worker, then 256 on 2."""
    small = 64 * GRAD_TIME + 2 * (LATENCY + 1 * TRANSFER) + OVERHEAD
    large = 128 * GRAD_TIME + 2 * (LATENCY + 2 * TRANSFER) + OVERHEAD
    row = simulate({"run": SIZES}, N_PARAMS, tiny_cluster(), n_train=384).loc["run"]
    assert row["worker_minutes"] == pytest.approx((2 * small + 2 * large) / 60)
    assert row["minutes"] == pytest.approx((2 * small + large) / 60)


def test_worker_cap():
    cluster = tiny_cluster(max_workers=4, overhead=0.0, latency=0.0)
    # 10000 examples want 157 workers; 4 compute 2500 each.
    seconds = update_seconds([10_000], N_PARAMS, cluster)
    assert seconds[0] == pytest.approx(2500 * GRAD_TIME + 2 * 4 * TRANSFER)
    assert simulate({"big": [10_000]}, N_PARAMS, cluster).loc["big", "max_workers"] == 4


def test_uneven_split():
    # 100 examples need 2 workers of 64; they share 50 / 50.
    cluster = tiny_cluster(max_workers=8, overhead=0.0, latency=0.0)
    seconds = update_seconds([100], N_PARAMS, cluster)
    assert seconds[0] == pytest.approx(50 * GRAD_TIME + 2 * 2 * TRANSFER)


@pytest.mark.parametrize("reduction", ["centralized", "allreduce"])
def test_large_batch_costs_a_small_ones_time(reduction):
    """The premise of growing batches: on enough workers and a free
    network, 32 times the examples take the time of one worker's share."""
    cluster = Cluster(grad_time=1e-3, grads_per_worker=64, max_workers=32,
                      latency=0.0, bandwidth=1e30, reduction=reduction)
    small, large = update_seconds([64, 32 * 64], 10**6, cluster)
    assert large == pytest.approx(small, rel=1e-12)
    # A batch past the cluster's size takes longer.
    (larger,) = update_seconds([64 * 64], 10**6, cluster)
    assert larger == pytest.approx(small + 64 * 1e-3)


def test_communication_grows_with_workers_only_when_centralized():
    sizes = [64 * p for p in (2, 8, 32)]
    cluster = Cluster(grad_time=1e-3, grads_per_worker=64, latency=0.0)
    central = update_seconds(sizes, 10**6, cluster)
    ring = update_seconds(sizes, 10**6, dataclasses.replace(cluster, reduction="allreduce"))
    transfer = 4e6 / 1.25e9  # 4 MB of float32 at 10 Gbit/s
    # Every extra worker is one more copy out and one more sum back.
    np.testing.assert_allclose(np.diff(central), [2 * 6 * transfer, 2 * 24 * transfer])
    # The ring's 2 (P - 1) / P transfers tend to 2: from 1 at 2 workers to 31/16 at 32.
    np.testing.assert_allclose(ring - ring[0], [0, (7 / 4 - 1) * transfer,
                                                (31 / 16 - 1) * transfer])


def test_cluster_is_frozen():
    cluster = tiny_cluster()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cluster.max_workers = 8


@pytest.mark.parametrize("name, value, words", [
    ("grad_time", 0, "grad_time must be a positive number"),
    ("grad_time", float("inf"), "grad_time must be a positive number"),
    ("grads_per_worker", 0, "grads_per_worker must be a positive integer"),
    ("grads_per_worker", 64.0, "grads_per_worker must be a positive integer"),
    ("max_workers", -1, "max_workers must be a positive integer"),
    ("latency", -1e-4, "latency must be a number >= 0"),
    ("bandwidth", 0, "bandwidth must be a positive number"),
    ("overhead", None, "overhead must be a number >= 0"),
    ("reduction", "ring", "reduction must be one of ('centralized', 'allreduce')"),
])
def test_cluster_errors(name, value, words):
    with pytest.raises(ValueError, match=rf"Cluster\({name}={value!r}\) is not accepted"):
        tiny_cluster(**{name: value})
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        tiny_cluster(**{name: value})


@pytest.mark.parametrize("sizes, n_params, match", [
    ([], N_PARAMS, r"batch_sizes=\[\] is not accepted"),
    ([64, 0], N_PARAMS, r"batch sizes \[0\] are not accepted; every batch size must be"),
    ([64, 1.5], N_PARAMS, r"batch sizes \[1.5\] are not accepted"),
    (SIZES, 0, "n_params=0 is not accepted; n_params must be a positive integer"),
])
def test_update_seconds_errors(sizes, n_params, match):
    with pytest.raises(ValueError, match=match):
        update_seconds(sizes, n_params, tiny_cluster())


def test_cluster_must_be_a_cluster():
    with pytest.raises(TypeError, match="pass a dask_adadamp.simulate.Cluster"):
        update_seconds(SIZES, N_PARAMS, {"grad_time": 1e-3})


def test_history_errors():
    with pytest.raises(ValueError, match="the history has no model updates"):
        batch_sizes(History())
    no_updates = History()
    no_updates.new_epoch()
    no_updates.new_batch()
    no_updates.record_batch("valid_loss", 1.0)
    with pytest.raises(ValueError, match="'batch_size', which DaskClassifier"):
        batch_sizes(no_updates)
    with pytest.raises(ValueError, match="DaskClassifier has no history: fit it first"):
        batch_sizes(DaskClassifier(MLP))
    with pytest.raises(ValueError, match="a history of type str is not accepted"):
        batch_sizes("history")


def test_simulate_errors():
    cluster = tiny_cluster()
    with pytest.raises(ValueError, match="histories as list is not accepted; pass a "
                                         "non-empty dict"):
        simulate(SIZES, N_PARAMS, cluster)
    with pytest.raises(ValueError, match="histories as an empty dict is not accepted"):
        simulate({}, N_PARAMS, cluster)
    with pytest.raises(ValueError, match="n_train=0 is not accepted"):
        simulate({"a": SIZES}, N_PARAMS, cluster, n_train=0)
    # The failing schedule is named.
    with pytest.raises(ValueError, match=r"histories\['empty'\]: an empty history or "
                                         "list of batch sizes is not accepted"):
        simulate({"fine": SIZES, "empty": History()}, N_PARAMS, cluster)
    with pytest.raises(ValueError, match=r"histories\['odd'\]: a int is not accepted"):
        simulate({"odd": 64}, N_PARAMS, cluster)
