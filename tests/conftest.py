"""Shared fixtures: Dask clusters and small seeded data.

Plain helpers (``make_classifier``, ``weights``, ``adadamp_keys``,
``DiesOnCue``) live in helpers.py; test modules import them from there.

Clusters:

- ``cluster`` / ``client``: the session's two-worker process-based cluster,
  for tests that train on "a real cluster" without disturbing it;
- ``shared_cluster(n)``: process-based clusters of ``n`` workers, started
  once per session and shared by the tests that need a size other than two
  (never disturbed either: nothing there kills, retires or scales them);
- ``new_cluster(n, processes=...)``: a fresh cluster of the test's own,
  closed after it, for tests that disturb the cluster (kill a worker
  process, scale it, close its client). ``processes=True`` only where the
  test needs worker processes: a worker to kill, or code to pickle to
  another interpreter;
- ``slow_cluster(n, seconds)``: a ``new_cluster`` whose workers take
  ``seconds`` to start, as from a job queue.
"""
import subprocess
import sys
import tempfile

import cloudpickle
import dask
import numpy as np
import pytest
from distributed import Client, LocalCluster

import helpers
from dashboard_helpers import TIMEOUT, start_scheduler, stop
from dask_adadamp.datasets import digits
from helpers import adadamp_keys, make_classifier


def pytest_collection_modifyitems(config, items):
    # Tests marked slow (minutes) run only when -m names them (`-m slow`,
    # `-m "slow or gpu"`); without -m, or with one that does not, they are
    # skipped with a reason rather than silently deselected.
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: select with -m slow")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)


def _local_cluster(n_workers, processes=True, **kwargs):
    return LocalCluster(n_workers=n_workers, threads_per_worker=1,
                        processes=processes, dashboard_address=":0",
                        silence_logs=40, **kwargs)


@pytest.fixture(scope="session")
def shared_cluster():
    """``shared_cluster(n)``: the session's process-based cluster of ``n``
    workers, started on first use. Tests must leave it as they found it."""
    clusters = {}

    def get(n_workers):
        if n_workers not in clusters:
            clusters[n_workers] = _local_cluster(n_workers)
        return clusters[n_workers]

    yield get
    for cluster in clusters.values():
        cluster.close()


@pytest.fixture(scope="session")
def cluster(shared_cluster):
    return shared_cluster(2)


@pytest.fixture
def client(cluster):
    with Client(cluster) as client:
        yield client
        # Whatever a test's fits placed must be gone when they return.
        assert adadamp_keys(client) == []


@pytest.fixture
def new_cluster():
    """``new_cluster(n, processes=False, **kwargs)``: a cluster of the
    test's own, closed when the test ends."""
    made = []

    def make(n_workers, processes=False, **kwargs):
        made.append(_local_cluster(n_workers, processes=processes, **kwargs))
        return made[-1]

    yield make
    for cluster in made:
        cluster.close()


@pytest.fixture
def slow_cluster(new_cluster):
    """``slow_cluster(n, seconds, processes=True)``: a cluster of the test's
    own whose workers each take ``seconds`` more to start (a worker preload
    that waits before the worker registers), a stand-in for a job queue;
    closed when the test ends.

    Worker processes add their own start (spawn, imports): about 1.5 s on
    an idle 2-core machine, 6-8 s while a fit keeps its cores busy.
    In-process workers (``processes=False``) take ``seconds`` and little
    more, for tests that need the delay known."""
    def make(n_workers, seconds, processes=True):
        return new_cluster(n_workers, processes=processes,
                           preload=[helpers.slow_start(seconds)])

    return make


@pytest.fixture
def fit_on(shared_cluster):
    """``fit_on(n, X, y, tree_workers="auto", **params)``: a classifier fit
    on the shared cluster of ``n`` worker processes, checked to leave no
    key behind."""
    def fit(n_workers, X, y, tree_workers="auto", **kwargs):
        with Client(shared_cluster(n_workers)) as client, \
                dask.config.set({"adadamp.tree-workers": tree_workers}):
            est = make_classifier(client=client, **kwargs).fit(X, y)
            assert adadamp_keys(client) == []
        return est

    return fit


@pytest.fixture
def by_value():
    """Worker processes unpickle the classes of helpers.py (DiesOnCue) by
    value."""
    module = sys.modules[helpers.__name__]
    cloudpickle.register_pickle_by_value(module)
    yield
    cloudpickle.unregister_pickle_by_value(module)


@pytest.fixture(scope="module")
def module_by_value(request):
    """Worker processes unpickle the test module's own classes by value
    (``pytestmark = pytest.mark.usefixtures("module_by_value")``)."""
    cloudpickle.register_pickle_by_value(request.module)
    yield
    cloudpickle.unregister_pickle_by_value(request.module)


@pytest.fixture(scope="session")
def digits_data():
    return digits(random_state=0)


@pytest.fixture
def small_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 64)).astype("float32")
    y = (X[:, :10].sum(axis=1) > 0).astype("int64")
    return X, y


@pytest.fixture(scope="module")
def separate_cluster():
    """``dask scheduler`` plus one ``dask worker --nthreads 1``, each in its
    own process, as on a real cluster."""
    with tempfile.TemporaryDirectory() as tmp:
        scheduler, address, dashboard_url = start_scheduler(tmp)
        worker = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", address,
             "--nthreads", "1", "--no-nanny", "--no-dashboard",
             "--death-timeout", "30"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
        try:
            with Client(address, timeout=TIMEOUT) as client:
                client.wait_for_workers(1, timeout=TIMEOUT)
            yield address, dashboard_url
        finally:
            stop(worker, scheduler)


@pytest.fixture
def separate_client(separate_cluster):
    address, _ = separate_cluster
    with Client(address, timeout=TIMEOUT) as client:
        yield client
