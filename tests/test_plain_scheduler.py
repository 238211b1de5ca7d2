"""A fit on a plain Dask scheduler: a ``dask scheduler`` process whose Python
cannot import torch, skorch or dask_adadamp (a common scheduler image), with
two ``dask worker`` processes and no cluster manager.

The scheduler unpickles every task graph it is sent, so any task whose
function or arguments live in torch, skorch or dask_adadamp fails there
("Error during deserialization of the task graph"); the fit must send none.
The dashboard's scheduler plugin cannot be unpickled there either: the fit
trains without the page and says so (:class:`DashboardOffWarning`).
"""
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import cloudpickle
import dask.array as da
import numpy as np
import psutil
import pytest
import torch
from dashboard_helpers import TIMEOUT, start_scheduler, stop
from distributed import Client
from helpers import adadamp_keys, make_classifier, weights

from dask_adadamp.dashboard import FitMonitor
from dask_adadamp.exceptions import DashboardOffWarning, NoClusterManagerWarning

HIDDEN = ("torch", "skorch", "dask_adadamp")

# Run by the scheduler's Python before distributed's CLI: importing any of
# HIDDEN (or a submodule) raises ImportError, as where they are not installed.
BLOCKER = f"""
import sys

class HideModules:
    names = {HIDDEN!r}

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not installed "
                                      "on this scheduler)", name=name)
        return None

sys.meta_path.insert(0, HideModules())
"""


# The functions of this module that run on the scheduler travel by value:
# the scheduler cannot import this module, and they need nothing but the
# standard library there.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _hidden_imported():
    import sys
    return sorted(name for name in sys.modules
                  if name.split(".")[0] in ("torch", "skorch", "dask_adadamp"))


def _can_import(name):
    import importlib
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def plain_cluster(tmp_path_factory):
    """(address, scheduler process): a scheduler that cannot import torch,
    skorch or dask_adadamp, and two ``dask worker --nthreads 1`` processes
    (ordinary Python); no cluster manager."""
    tmp = tmp_path_factory.mktemp("plain")
    blocker = tmp / "hide_modules.py"
    blocker.write_text(BLOCKER)
    scheduler, address, _ = start_scheduler(
        tmp, python_prefix=f"exec(open({str(blocker)!r}).read())")
    workers = []
    try:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (str(_repo()), os.environ.get("PYTHONPATH")) if p))
        for _ in range(2):
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address,
                 "--nthreads", "1", "--no-nanny", "--no-dashboard",
                 "--death-timeout", "30"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp, env=env))
        with Client(address, timeout=TIMEOUT) as client:
            client.wait_for_workers(2, timeout=TIMEOUT)
            assert client.run_on_scheduler(_hidden_imported) == []
            assert not any(client.run_on_scheduler(_can_import, name) for name in HIDDEN)
        yield address, scheduler
    finally:
        stop(*workers, scheduler)
    assert all(p.poll() is not None for p in [scheduler, *workers])


def _repo():
    return Path(__file__).resolve().parents[1]


@pytest.fixture
def plain_client(plain_cluster):
    address, _ = plain_cluster
    with Client(address, timeout=TIMEOUT) as client:
        client.wait_for_workers(2, timeout=TIMEOUT)
        yield client
        assert adadamp_keys(client) == []
        assert client.run_on_scheduler(_hidden_imported) == []


def _rss_mb(proc):
    return psutil.Process(proc.pid).memory_info().rss / 2**20


def _dask_inputs(X, y, unknown=False):
    Xd, yd = da.from_array(X, chunks=60), da.from_array(y, chunks=60)
    if unknown:  # blocks of unknown size, as after boolean indexing
        keep = da.from_array(np.arange(len(X)) % 7 != 3, chunks=60)
        Xd, yd = Xd[keep], yd[keep]
    return Xd, yd


def test_fits_on_a_scheduler_without_torch_skorch_or_dask_adadamp(
        plain_cluster, plain_client, small_data, fit_on):
    _, scheduler = plain_cluster
    X, y = small_data
    before = _rss_mb(scheduler)
    fitted = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        started = time.monotonic()
        fitted["numpy"] = make_classifier(client=plain_client).fit(X, y)
        first_fit_s = time.monotonic() - started
        fitted["dask"] = make_classifier(client=plain_client).fit(*_dask_inputs(X, y))
        fitted["dask, unknown blocks"] = make_classifier(client=plain_client).fit(
            *_dask_inputs(X, y, unknown=True))
    after = _rss_mb(scheduler)
    print(f"plain scheduler RSS: {before:.0f} -> {after:.0f} MB over 3 fits; "
          f"first fit {first_fit_s:.1f} s")
    # The scheduler never imported what it has not got, and did not grow by
    # a torch import (measured: 78 -> 401 MB where a fit's placement tasks
    # made it import torch and skorch; now 78 -> 79 MB after a numpy fit,
    # ~160 MB after a dask-array fit: dask's array graphs bring scipy, numba
    # and sparse, as any dask-array work does).
    assert plain_client.run_on_scheduler(_hidden_imported) == []
    assert after - before < 200
    # The page is off for this client, said once, naming the cause.
    off = [w for w in caught if issubclass(w.category, DashboardOffWarning)]
    assert len(off) == 1, [str(w.message) for w in caught]
    assert "dask_adadamp" in str(off[0].message)
    assert "Training goes on" in str(off[0].message)
    # Trained: the same weights as on an ordinary cluster of two workers.
    expected = {"numpy": fit_on(2, X, y),
                "dask": fit_on(2, *_dask_inputs(X, y)),
                "dask, unknown blocks": fit_on(2, *_dask_inputs(X, y, unknown=True))}
    for kind, est in fitted.items():
        assert len(est.history) == 2, kind
        assert torch.equal(weights(est), weights(expected[kind])), kind
    # Prediction and scoring of dask inputs run there too (the net travels
    # to the workers as bytes, not as an object the scheduler unpickles).
    est = fitted["dask"]
    Xd, yd = _dask_inputs(X, y)
    np.testing.assert_array_equal(est.predict(Xd).compute(), est.predict(X))
    assert est.score(Xd, yd) == pytest.approx(est.score(X, y))
    assert plain_client.run_on_scheduler(_hidden_imported) == []


def test_the_dashboard_degrades_at_once(plain_cluster):
    # A client new to the scheduler: the refused registration costs one
    # round trip, not a timeout.
    address, _ = plain_cluster
    with Client(address, timeout=TIMEOUT) as client:
        started = time.monotonic()
        with pytest.warns(DashboardOffWarning, match="could not be registered"):
            monitor = FitMonitor(client, "Net")
        elapsed = time.monotonic() - started
        print(f"dashboard off after {elapsed * 1e3:.0f} ms")
        assert elapsed < 5
        assert not monitor.enabled
        # Once per client: a second fit's monitor does not ask or warn again.
        with warnings.catch_warnings():
            warnings.simplefilter("error", DashboardOffWarning)
            assert not FitMonitor(client, "Net").enabled
        monitor.close()
        assert client.get_events("adadamp") == ()


def test_no_cluster_manager_trains_on_the_workers_there_are(plain_client, small_data):
    # max_workers=4 on a cluster of two workers and no manager to scale:
    # trained on the two, said once, and the weights are those of a fit
    # that asked for nothing (updates do not depend on the cluster's size).
    X, y = small_data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est = make_classifier(client=plain_client, min_workers=1, max_workers=4,
                              batch_size=256).fit(X, y)
    said = [w for w in caught if issubclass(w.category, NoClusterManagerWarning)]
    assert len(said) == 1, [str(w.message) for w in caught]
    assert "2 workers that exist" in str(said[0].message)
    assert len(plain_client.nthreads()) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DashboardOffWarning)
        plain = make_classifier(client=plain_client, batch_size=256).fit(X, y)
    assert torch.equal(weights(est), weights(plain))
    used = {row["n_workers"] for epoch in est.history for row in epoch["batches"]}
    assert used <= {1, 2} and 2 in used
