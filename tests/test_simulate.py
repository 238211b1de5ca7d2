"""dask_adadamp.simulate: the cluster model against times computed by hand,
histories in every shape, the traps that raise or warn, the paper's table
reproduced, and a cluster calibrated from a history."""
import dataclasses
import math
import os
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from skorch.history import History

from dask_adadamp import DaskClassifier
from dask_adadamp.models import MLP
from dask_adadamp.simulate import Cluster, batch_sizes, simulate, update_seconds

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "benchmarks")

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


def tiny_history(key="batch_size"):
    """Two epochs of [64, 64] and [256], with a validation batch in the
    second (no ``batch_size``: not a model update)."""
    history = History()
    for epoch_sizes in ([64, 64], [256]):
        history.new_epoch()
        for size in epoch_sizes:
            history.new_batch()
            history.record_batch("train_loss", 1.0)
            history.record_batch(key, size)
    history.new_batch()
    history.record_batch("valid_loss", 1.0)
    history.record_batch("valid_batch_size", 100)
    return history


# --- the model, by hand ------------------------------------------------------

def test_centralized_by_hand():
    # 64 examples: 1 worker; the weights go out to it and its sum comes back.
    small = 64 * GRAD_TIME + 2 * (LATENCY + 1 * TRANSFER) + OVERHEAD
    # 256 examples: capped at 2 workers of 128; the client's link carries 2
    # copies of the weights out and 2 sums back.
    large = 128 * GRAD_TIME + 2 * (LATENCY + 2 * TRANSFER) + OVERHEAD
    assert small == pytest.approx(0.00064 + 0.0022 + 0.02)
    np.testing.assert_allclose(update_seconds(SIZES, N_PARAMS, tiny_cluster()),
                               [small, small, large])


def test_allreduce_and_tree_by_hand():
    cluster = tiny_cluster(max_workers=None, overhead=0.0)
    ring = update_seconds([256], N_PARAMS, dataclasses.replace(cluster, reduction="allreduce"))
    # 4 workers of 64: a ring of 4 is 2 * 3 latencies, 2 * 3 / 4 of the weights.
    assert ring[0] == pytest.approx(64 * GRAD_TIME + 6 * LATENCY + 1.5 * TRANSFER)
    # A binary tree over 5 workers has 3 levels, down and up.
    tree = update_seconds([320], N_PARAMS, dataclasses.replace(cluster, reduction="tree"))
    assert tree[0] == pytest.approx(64 * GRAD_TIME + 2 * 3 * (LATENCY + TRANSFER))
    none = update_seconds([320], N_PARAMS, dataclasses.replace(cluster, reduction=None))
    assert none[0] == pytest.approx(64 * GRAD_TIME)


def test_this_librarys_paths_by_hand():
    """Chunks of grads_per_worker: 512 examples on 2 workers are 8 chunks,
    4 per worker, computed in one call each."""
    cluster = tiny_cluster(overhead=0.0, reduction="adadamp-direct")
    direct = update_seconds([512], N_PARAMS, cluster)[0]
    # 2 copies of the weights out, one gradient per chunk (8) back.
    assert direct == pytest.approx(256 * GRAD_TIME + 2 * LATENCY + (2 + 8) * TRANSFER)
    tree = update_seconds([512], N_PARAMS, dataclasses.replace(cluster,
                                                               reduction="adadamp-tree"))[0]
    # Client -> first worker -> a tree of 1 level, and one sum back up.
    assert tree == pytest.approx(256 * GRAD_TIME + 2 * (1 + 1) * (LATENCY + TRANSFER))
    # The library's choice: the tree past 2 chunks per worker.
    auto = dataclasses.replace(cluster, reduction="adadamp")
    assert update_seconds([512], N_PARAMS, auto)[0] == pytest.approx(tree)
    assert update_seconds([128], N_PARAMS, auto)[0] == pytest.approx(
        64 * GRAD_TIME + 2 * LATENCY + (2 + 2) * TRANSFER)


def test_concurrency_task_cost_and_overhead_per_worker_by_hand():
    """The paper's setting: 4 tasks at once, so 5 tasks take 2 rounds, each
    paying the task's cost, compute and transfers."""
    cluster = Cluster(grad_time=1e-3, grads_per_worker=10, concurrency=4, task_cost=0.05,
                      latency=0.0, bandwidth=4e6, reduction="tree", overhead=0.01,
                      overhead_per_worker=0.002)
    (seconds,) = update_seconds([50], N_PARAMS, cluster)
    assert seconds == pytest.approx(2 * (0.05 + 2 * 3 * 1e-3 + 10 * 1e-3) + 0.01 + 5 * 0.002)
    # All at once: one round.
    (parallel,) = update_seconds([50], N_PARAMS, dataclasses.replace(cluster, concurrency=None))
    assert parallel == pytest.approx(seconds - (0.05 + 6e-3 + 10e-3))
    # Workers sharing 2 cores in this library's paths: 8 chunks take 4 chunk-times.
    lib = Cluster(grad_time=1e-3, grads_per_worker=10, max_workers=4, concurrency=2,
                  latency=0.0, bandwidth=1e12, overhead=0.0, reduction="adadamp-tree")
    assert update_seconds([80], N_PARAMS, lib)[0] == pytest.approx(40e-3, abs=1e-6)


def test_table_of_a_history_and_worker_minutes():
    cluster = tiny_cluster()
    with pytest.warns(UserWarning, match="max_workers=2 binds"):
        row = simulate({"tiny": tiny_history()}, N_PARAMS, cluster).loc["tiny"]
    seconds = update_seconds(SIZES, N_PARAMS, cluster)
    assert (row["model_updates"], row["epochs"], row["examples"]) == (3, 2, 384)
    assert (row["max_workers"], row["updates_capped"]) == (2, 1)
    assert row["minutes"] == pytest.approx(seconds.sum() / 60)
    assert row["minutes"] == pytest.approx(
        row["compute_minutes"] + row["communication_minutes"] + row["overhead_minutes"])
    assert row["worker_minutes"] == pytest.approx(seconds @ [1, 1, 2] / 60)


def test_large_batch_costs_a_small_ones_time_on_enough_workers():
    cluster = Cluster(grad_time=1e-3, grads_per_worker=64, latency=0.0,
                      bandwidth=1e15, reduction="allreduce")
    small, large = update_seconds([64, 32 * 64], 10**6, cluster)
    assert large == pytest.approx(small, rel=1e-6)


# --- histories in every shape ----------------------------------------------

def test_every_shape_of_one_fit_gives_its_updates_and_epochs():
    per_update = pd.DataFrame({"epoch": [1, 1, 2], "batch_size": [64, 64, 256]})
    per_epoch = pd.DataFrame({"epoch": [1, 2], "batch_size_": [64.0, 256.0],
                              "n_updates": [2, 3]})  # cumulative, floats
    counts = pd.DataFrame({"epoch": [1, 2], "partial_fit__batch_size": [64, 256],
                           "model_updates": [2, 1]})  # per epoch
    shapes = {"history": tiny_history(), "skorch": tiny_history("train_batch_size"),
              "estimator": SimpleNamespace(history=tiny_history()),
              "epoch dicts": list(tiny_history()), "per update": per_update,
              "per epoch": per_epoch, "per-epoch counts": counts,
              "list": [64, 64, 256], "floats": np.array([64.0, 64.0, 256.0])}
    table = simulate(shapes, N_PARAMS, tiny_cluster(max_workers=None), n_train=128)
    assert table["minutes"].nunique() == 1
    assert table["model_updates"].tolist() == [3] * len(shapes)
    assert table["epochs"].tolist() == [2.0] * len(shapes)
    assert batch_sizes(per_epoch) == SIZES


def test_a_csv_path_and_skorchs_last_short_batch(tmp_path):
    path = tmp_path / "history.csv"
    # 100 examples at batch 40: skorch makes 40, 40, 20 per epoch.
    pd.DataFrame({"epoch": [1, 2], "batch_size": [40, 40]}).to_csv(path, index=False)
    assert batch_sizes(str(path), n_train=100) == [40, 40, 20] * 2
    # With counts of updates and examples (cumulative), as adadamp writes them.
    pd.DataFrame({"epoch": [0, 1], "batch_size_": [40, 40], "n_updates": [3, 6],
                  "n_data": [120, 240]}).to_csv(path, index=False)
    assert batch_sizes(path) == [40] * 6


def test_epochs_are_counted_as_epochs_not_examples_over_n_train():
    """adadamp's epochs end with a full batch past n_train: 200 epochs of
    391 x 128 = 50,048 examples are 200 epochs, not 200.2."""
    sizes = [128] * (391 * 200)
    table = simulate({"run": sizes}, N_PARAMS, tiny_cluster(max_workers=None),
                     n_train=50_000)
    assert table.loc["run", "epochs"] == 200
    assert simulate({"run": [100, 100, 50]}, N_PARAMS, tiny_cluster(max_workers=None),
                    n_train=100).loc["run", "epochs"] == 2.5
    assert math.isnan(simulate({"run": [100]}, N_PARAMS,
                               tiny_cluster(max_workers=None)).loc["run", "epochs"])


# --- traps -------------------------------------------------------------------

def test_a_per_epoch_list_warns():
    per_epoch = [128] * 60 + [640] * 60 + [3200] * 60 + [16000] * 20
    with pytest.warns(UserWarning, match=r"is this one batch size per epoch\? .* pass a "
                                         r"table"):
        simulate({"16k": per_epoch}, N_PARAMS, tiny_cluster(max_workers=None),
                 n_train=50_000)
    # Also where one of its changes falls on an epoch's start by chance (at
    # 140 of these, doubling every 20 epochs).
    doubling = [min(128 * 2 ** (e // 20), 16000) for e in range(200)]
    with pytest.warns(UserWarning, match="is this one batch size per epoch"):
        simulate({"x2": doubling}, N_PARAMS, tiny_cluster(max_workers=None),
                 n_train=50_000)
    # The same schedule per update does not warn.
    per_update = [128] * 391 * 3 + [640] * 79 * 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        simulate({"ok": per_update}, N_PARAMS, tiny_cluster(max_workers=None),
                 n_train=50_000)


@pytest.mark.parametrize("run, match", [
    (pd.DataFrame({"epoch": [1], "score": [0.5]}),
     r"a table with columns \['epoch', 'score'\] is not accepted: it has no batch-size "
     r"column; name it one of \('partial_fit__batch_size'"),
    (pd.DataFrame({"epoch": [1, 2], "batch_size": [64, None], "n_updates": [1, 2]}),
     r"column 'batch_size' \[nan\] \(at positions \[1\]\) are not accepted; .* drop the "
     "rows"),
    (pd.DataFrame({"epoch": [1, 2], "batch_size": [64, 64]}),
     "a per-epoch table .* without update counts is not accepted without n_train"),
    ([64, 1.5], r"batch sizes \[1.5\] \(at positions \[1\]\) are not accepted"),
    ([], "an empty history or list of batch sizes is not accepted"),
    (64, "a int is not accepted; pass a history"),
    ({"batch_size": 64}, "a dict is not accepted"),
])
def test_histories_that_raise(run, match):
    with pytest.raises(ValueError, match=r"histories\['run'\]: " + match):
        simulate({"run": run}, N_PARAMS, tiny_cluster())


@pytest.mark.parametrize("field, value, fix", [
    ("bandwidth", 54, "bandwidth='54 Gbit/s'"),
    ("latency", 50, "latency='50 us'"),
    ("grad_time", 78.32, "grad_time='612 us'"),
    ("overhead", 100, "overhead='13 ms'"),
])
def test_numbers_in_the_wrong_unit_raise_and_name_the_fix(field, value, fix):
    with pytest.raises(ValueError, match=rf"Cluster\({field}={value}\) is not accepted: "
                                         rf".* give the unit, e.g. {fix}"):
        tiny_cluster(**{field: value})


def test_units_as_strings():
    cluster = Cluster(grad_time="612 us", grads_per_worker=128, latency="0.05 us",
                      bandwidth="54 Gbit/s", task_cost="58.55 ms", overhead="13 ms")
    assert cluster.grad_time == pytest.approx(612e-6)
    assert cluster.latency == pytest.approx(5e-8)
    assert cluster.bandwidth == 54e9 / 8
    assert cluster.task_cost == pytest.approx(0.05855)
    assert Cluster(grad_time=1e-3, grads_per_worker=1, bandwidth="1.25 GB/s").bandwidth == 1.25e9
    with pytest.raises(ValueError, match=r"Cluster\(bandwidth='54 Gbits' is not accepted"):
        Cluster(grad_time=1e-3, grads_per_worker=1, bandwidth="54 Gbits")
    with pytest.raises(ValueError, match=r"Cluster\(latency='fast' is not accepted"):
        Cluster(grad_time=1e-3, grads_per_worker=1, latency="fast")


def test_a_cap_that_binds_and_workers_that_disagree_warn():
    with pytest.warns(UserWarning, match=r"max_workers=32 binds \('16k': 1 of 2 updates "
                                         r"wanted up to 125\).*max_workers=None"):
        simulate({"16k": [128, 16000]}, N_PARAMS,
                 tiny_cluster(grads_per_worker=128, max_workers=32))
    table = pd.DataFrame({"epoch": [0], "batch_size": [640], "n_updates": [79],
                          "n_workers": [5]})
    with pytest.warns(UserWarning, match="records 5 workers at batch 640, where "
                                         "grads_per_worker=64 gives 10.*about 128"):
        simulate({"run": table}, N_PARAMS, tiny_cluster(max_workers=None))


@pytest.mark.parametrize("name, value, words", [
    ("grad_time", 0, "grad_time must be a positive number"),
    ("grads_per_worker", 64.0, "grads_per_worker must be a positive integer"),
    ("max_workers", -1, "max_workers must be None or a positive integer"),
    ("concurrency", 0, "concurrency must be None or a positive integer"),
    ("latency", -1e-4, "latency must be a number >= 0"),
    ("overhead", None, "overhead must be a number >= 0"),
    ("reduction", "ring", "reduction must be one of"),
])
def test_cluster_errors(name, value, words):
    with pytest.raises(ValueError, match=rf"Cluster\({name}={value!r}\) is not accepted; "
                                         + words):
        tiny_cluster(**{name: value})


def test_other_errors():
    cluster = tiny_cluster()
    with pytest.raises(TypeError, match="pass a dask_adadamp.simulate.Cluster"):
        update_seconds(SIZES, N_PARAMS, {"grad_time": 1e-3})
    with pytest.raises(ValueError, match="n_params=0 is not accepted"):
        update_seconds(SIZES, 0, cluster)
    with pytest.raises(ValueError, match="histories as list is not accepted"):
        simulate(SIZES, N_PARAMS, cluster)
    with pytest.raises(ValueError, match="n_train=0 is not accepted"):
        simulate({"a": SIZES}, N_PARAMS, cluster, n_train=0)
    with pytest.raises(ValueError, match="an empty history or list of batch sizes"):
        batch_sizes(History())
    no_updates = History()
    no_updates.new_epoch()
    no_updates.new_batch()
    no_updates.record_batch("valid_loss", 1.0)
    with pytest.raises(ValueError, match="the history has no model updates"):
        batch_sizes(no_updates)
    with pytest.raises(ValueError, match="DaskClassifier has no history: fit it first"):
        batch_sizes(DaskClassifier(MLP))
    with pytest.raises(ValueError, match=r"updates='epochs' is not accepted"):
        simulate({"a": SIZES}, N_PARAMS, cluster, updates="epochs")


# --- the paper's table ------------------------------------------------------

def test_the_papers_fifteen_cells_within_two_percent():
    sys.path.insert(0, BENCHMARKS)
    try:
        import simulate_table
    finally:
        sys.path.remove(BENCHMARKS)
    result = simulate_table.run()
    for row in result["rows"]:
        assert row["model_updates"] == row["paper_updates"]
        assert row["epochs"] == 200
        for network in simulate_table.NETWORKS:
            cell = row[network]
            assert cell["simulated"] == pytest.approx(cell["paper"], rel=0.02), (
                row["label"], network)
            # All workers at once is faster than 4 tasks at a time.
            assert cell["parallel"] <= cell["simulated"]


# --- calibration --------------------------------------------------------------

def synthetic_history(cluster, n_params, sizes, workers):
    """What a dask-adadamp fit on ``workers`` workers would record if it ran
    exactly as ``cluster`` says: per update its compute, its transfers and
    its wall-clock time."""
    on = dataclasses.replace(cluster, max_workers=workers)
    rows = []
    for size in sizes:
        chunks = -(-size // cluster.grads_per_worker)
        used = min(workers, chunks)
        tree = chunks > 2 * used
        one = dataclasses.replace(on, reduction="adadamp-tree" if tree else "adadamp-direct",
                                  overhead=0.0, overhead_per_worker=0.0, latency=0.0,
                                  bandwidth=1e15)
        compute = update_seconds([size], n_params, one)[0]
        comm = update_seconds([size], n_params, dataclasses.replace(
            on, reduction=one.reduction, grad_time=1e-12, task_cost=0.0, overhead=0.0,
            overhead_per_worker=0.0))[0]
        wall = compute + comm + cluster.overhead + cluster.overhead_per_worker * used
        rows.append({"batch_size": size, "n_workers": used, "compute_ms": 1e3 * compute,
                     "comm_ms": 1e3 * comm, "tree": tree,
                     "bytes_out": 4 * n_params * (1 if tree else used),
                     "worker_s": workers * wall, "workers_present": workers})
    return [{"batches": rows}]


@pytest.mark.filterwarnings("ignore:max_workers=4 binds")
def test_calibration_round_trips_a_synthetic_history():
    truth = Cluster(grad_time="500 us", grads_per_worker=64, task_cost="2 ms",
                    latency="1 ms", bandwidth="2 GB/s", overhead="20 ms",
                    overhead_per_worker="3 ms", reduction="adadamp")
    n_params = 1_000_000
    sizes = [64] * 20 + [128] * 10 + [256] * 5 + [512] * 3
    history = synthetic_history(truth, n_params, sizes, workers=2)
    fitted = Cluster.from_history(history, grads_per_worker=64)
    for field in ("grad_time", "task_cost", "latency", "bandwidth", "overhead",
                  "overhead_per_worker"):
        assert getattr(fitted, field) == pytest.approx(getattr(truth, field), rel=1e-3,
                                                       abs=1e-9), field
    # It predicts the fit on 4 workers that the true cluster gives.
    predicted = simulate({"fit": sizes}, n_params, dataclasses.replace(fitted, max_workers=4))
    expected = simulate({"fit": sizes}, n_params, dataclasses.replace(truth, max_workers=4))
    assert predicted.loc["fit", "minutes"] == pytest.approx(expected.loc["fit", "minutes"])
    # Fields of the cluster to predict pass through.
    assert Cluster.from_history(history, grads_per_worker=64, concurrency=2).concurrency == 2


def test_calibration_needs_a_dask_adadamp_history():
    with pytest.raises(ValueError, match="Cluster.from_history needs the history of a "
                                         "dask-adadamp fit"):
        Cluster.from_history(tiny_history(), grads_per_worker=64)
    with pytest.raises(ValueError, match="grads_per_worker=None is not accepted"):
        Cluster.from_history(tiny_history())
