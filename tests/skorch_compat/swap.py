"""pytest plugin: skorch's own tests with dask-adadamp's classes swapped in.

``skorch.NeuralNetClassifier`` and ``skorch.NeuralNetRegressor`` become
:class:`~dask_adadamp.DaskClassifier` and :class:`~dask_adadamp.DaskRegressor`
(skorch's tests import them from ``skorch`` when they run), and every fit
trains on one process-based ``LocalCluster`` with 2 workers, so the net
really is pickled to other processes. A test *applies* when it builds one
of the Dask classes; the summary counts those apart from the tests that
only exercise skorch itself. Tests listed in :mod:`excluded` are skipped,
each with its reason. Run it with ``run.py`` beside this file.
"""
import functools
import json
import os
from collections import Counter

import pytest

from excluded import EXCLUDED


def pytest_configure(config):
    import skorch
    from distributed import Client, LocalCluster

    from dask_adadamp import DaskClassifier, DaskRegressor
    from dask_adadamp.estimator import DaskNetMixin

    skorch.NeuralNetClassifier = DaskClassifier
    skorch.NeuralNetRegressor = DaskRegressor
    init = DaskNetMixin.__init__

    @functools.wraps(init)  # keeps the signature scikit-learn reads
    def tracked(self, *args, **kwargs):
        _STATE["built"] = True
        init(self, *args, **kwargs)

    DaskNetMixin.__init__ = tracked
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=40)
    _STATE.update(cluster=cluster, client=Client(cluster), results={})


_STATE = {"built": False}


def pytest_unconfigure(config):
    if "client" in _STATE:
        _STATE["client"].close()
        _STATE["cluster"].close()


def _test_id(nodeid):
    """A node id less its parametrization (``test_net.py::T::test_x[a-1]``
    is ``test_net.py::T::test_x``), as :mod:`excluded` names tests."""
    return nodeid.split("[", 1)[0]


def _excluded(nodeid):
    return EXCLUDED.get(_test_id(nodeid))


def pytest_collection_modifyitems(config, items):
    for item in items:
        reason = _excluded(item.nodeid)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"excluded: {reason}"))
    # Every exclusion names a test of the whole suite: one that names none
    # (renamed in a newer skorch, or mistyped) would exclude nothing.
    if not (config.getoption("keyword") or config.getoption("markexpr")
            or config.getoption("deselect")):
        unmatched = set(EXCLUDED) - {_test_id(item.nodeid) for item in items}
        if unmatched:
            raise pytest.UsageError(
                "tests/skorch_compat/excluded.py names tests that skorch's suite "
                f"does not have: {sorted(unmatched)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _STATE["built"] = False
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    results = _STATE["results"]
    key = item.nodeid
    # A test skorch marks @flaky (its suite's flaky plugin reruns it, e.g.
    # test_fit_lbfgs_optimizer, seeded by the clock) is run again from
    # setup: the last run's outcome is the test's, as pytest counts it.
    if call.when == "setup":
        results.pop(key, None)
    if report.skipped:
        results[key] = "excluded" if _excluded(key) else "skipped"
    elif report.failed:
        results[key] = "failed"
    elif call.when == "call" and key not in results:
        results[key] = "passed"
    if call.when == "call":
        _STATE["built"] = _STATE["built"] or any(
            _is_dask(v) for v in getattr(item, "funcargs", {}).values())
    if call.when == "teardown" and results.get(key) in ("passed", "failed"):
        applies = _STATE["built"]
        results[key] = f"{results[key]}{'' if applies else ' (skorch only)'}"


def _is_dask(value):
    """A Dask net, its class, or a pipeline or search holding one (a
    fixture may have built it for an earlier test)."""
    from dask_adadamp.estimator import DaskNetMixin

    if isinstance(value, DaskNetMixin) or (
            isinstance(value, type) and issubclass(value, DaskNetMixin)):
        return True
    steps = getattr(value, "steps", None) or []
    inner = [getattr(value, "estimator", None)] + [s[-1] for s in steps]
    return any(v is not None and v is not value and _is_dask(v) for v in inner)


def pytest_terminal_summary(terminalreporter):
    counts = Counter(_STATE["results"].values())
    terminalreporter.write_sep("=", "skorch's tests with the Dask classes")
    for outcome in ("passed", "failed", "excluded", "skipped",
                    "passed (skorch only)", "failed (skorch only)"):
        terminalreporter.write_line(f"{outcome:>22}: {counts.get(outcome, 0)}")
    path = os.environ.get("SKORCH_COMPAT_JSON")
    if path:
        with open(path, "w") as f:
            json.dump(_STATE["results"], f, indent=1, sort_keys=True)
