"""The dashboard over HTTP, from a real scheduler: metrics.json and the
page, from an in-process LocalCluster and from a ``dask scheduler`` and a
``dask worker`` in their own processes."""
import json
import urllib.error

import pytest
from helpers import make_classifier
from dashboard_helpers import (
    TIMEOUT,
    bill,
    epoch_bill,
    epoch_record,
    fits_of,
    get_json,
    get_response,
    get_text,
    record,
    start_scheduler,
    stop,
)
from distributed import Client
from skorch.callbacks import Callback

from dask_adadamp import _monitor, dashboard
from dask_adadamp.dashboard import FitMonitor


# --- in-process LocalCluster ---------------------------------------------------

def test_local_cluster_metrics_and_buffered_sends(client, monkeypatch):
    # No send falls due by time: what is sent depends only on the calls.
    monkeypatch.setattr(_monitor, "FLUSH_INTERVAL", 3600)
    url = client.dashboard_link.rsplit("/", 1)[0]
    monitor = FitMonitor(client, "local fit", {"schedule": "Constant(64)"})
    assert monitor.enabled
    for i in range(1, 2001):
        monitor.update(record(i))
    monitor.close()
    # 2000 updates cost two round trips to the scheduler, not 2000 (their
    # time is measured in benchmarks/monitor_cost.py and docs/dashboard.md).
    sent = [msg for _, msg in client.get_events("adadamp")
            if msg["fit"] == monitor.fit_id]
    assert [msg["kind"] for msg in sent] == ["start", "end"]
    # The plugin keeps the rows; the scheduler's event log keeps a stub.
    assert sent[-1] == {"fit": monitor.fit_id, "kind": "end", "rows": 2000,
                        "stored": True}

    fits = get_json(url + "/adadamp/metrics.json?fit=" + monitor.fit_id)["fits"]
    [fit] = fits
    assert fit["status"] == "finished"
    assert fit["updates"]["update"] == list(range(1, 2001))


def plugin_state(dask_scheduler):
    plugin = dask_scheduler.plugins[dashboard.PLUGIN_NAME]
    events = [msg for _, msg in dask_scheduler.get_events("adadamp")]
    return dict(plugin.refused), events


def store_garbage(dask_scheduler, fit_id):
    fit = dask_scheduler.plugins[dashboard.PLUGIN_NAME].fits[fit_id]
    fit.info, fit.signal_name = b"\xff", ["x"]
    fit.updates.columns["loss"].append(float("nan"))


def test_forged_messages_through_a_local_cluster(client):
    """Forged messages sent with client.log_event, as any client could: the
    JSON keeps answering, the running fit stays, nothing big is kept."""
    url = client.dashboard_link.rsplit("/", 1)[0]
    monitor = FitMonitor(client, "real fit", {"schedule": "Constant(64)"})
    monitor.update(record(1))
    monitor.flush()
    refused_before, _ = client.run_on_scheduler(plugin_state)
    forged = [
        {"fit": monitor.fit_id, "kind": "updates", "updates": {"loss": [b"\xff"]}},
        {"fit": "forged", "kind": "start", "info": "not a dict"},
        {"fit": monitor.fit_id, "kind": "updates", "signal_name": ["x"]},
        {"fit": monitor.fit_id, "kind": "updates",
         "updates": {"update": list(range(100_000))}},
        {"fit": "ghost", "kind": "start", "client": "Client-gone"},
        *({"fit": f"forged{i}", "kind": "start", "client": client.id}
          for i in range(25)),
    ]
    for msg in forged:
        client.log_event("adadamp", msg)
    refused, events = client.run_on_scheduler(plugin_state)
    new = {k: v - refused_before.get(k, 0) for k, v in refused.items()}
    assert new == {"invalid": 4, "client not connected": 1,
                   "client's running fits": 25 - (dashboard.MAX_RUNNING_PER_CLIENT - 1)}
    # The refused messages are stubs in the scheduler's event log: the
    # 100,000 rows are not kept there either.
    stubs = [e for e in events[-len(forged):] if e.get("kind") == "refused"]
    assert len(stubs) == len(forged) - (dashboard.MAX_RUNNING_PER_CLIENT - 1)
    assert all(len(json.dumps(e)) < 1000 for e in stubs)

    status, headers, body = get_response(url + "/adadamp/metrics.json")
    assert status == 200
    assert headers["X-Content-Type-Options"] == "nosniff"
    fits = {f["fit"]: f for f in json.loads(body)["fits"]}
    assert fits[monitor.fit_id]["status"] == "running"
    assert fits[monitor.fit_id]["updates"]["update"] == [1]
    assert fits[monitor.fit_id]["signal_name"] == "loss_ratio"
    monitor.update(record(2))
    monitor.close()
    [fit] = fits_of(url, monitor.fit_id)
    assert fit["status"] == "finished"
    assert fit["updates"]["update"] == [1, 2]

    # Whatever got stored, the JSON answers, and the page too.
    client.run_on_scheduler(store_garbage, fit_id=monitor.fit_id)
    status, _, body = get_response(url + "/adadamp/metrics.json")
    assert status == 200
    [fit] = [f for f in json.loads(body)["fits"] if f["fit"] == monitor.fit_id]
    assert fit["updates"]["loss"][-1] is None and fit["info"] == "\ufffd"
    status, headers, _ = get_response(url + "/adadamp")
    assert status == 200
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_page_is_served_with_a_link_in_the_nav_bar(client):
    pytest.importorskip("bokeh")
    url = client.dashboard_link.rsplit("/", 1)[0]
    FitMonitor(client, "local fit").close()
    page = get_text(url + "/adadamp")
    assert "bokeh" in page.lower()
    assert 'href="adadamp"' in get_text(url + "/status")


# --- a scheduler and a worker in their own processes ---------------------------

def test_metrics_json_from_a_separate_scheduler(separate_cluster,
                                                separate_client, monkeypatch):
    # Every update would be sent at once otherwise on a slow machine.
    monkeypatch.setattr(_monitor, "FLUSH_INTERVAL", 3600)
    _, dashboard_url = separate_cluster
    monitor = FitMonitor(separate_client, "DaskClassifier(MLP) 0123456789ab",
                         {"schedule": "AdaDamp(initial=32)", "n_train": 1000})
    assert monitor.enabled
    [fit] = fits_of(dashboard_url, monitor.fit_id)
    assert fit["status"] == "running"
    assert fit["name"] == "DaskClassifier(MLP) 0123456789ab"
    assert fit["updates"]["update"] == []

    for i in range(1, 51):
        monitor.update(record(i))
    monitor.epoch(epoch_record(1, 50))
    [fit] = fits_of(dashboard_url, monitor.fit_id)
    assert fit["status"] == "running"
    assert fit["updates"]["update"] == list(range(1, 51))
    assert fit["updates"]["batch_size"][:3] == [32, 32, 32]
    assert fit["epochs"]["epoch"] == [1]
    # Rows without the resource bill (as before it): null there.
    assert fit["updates"]["workers_present"] == [None] * 50
    assert fit["epochs"]["worker_s"] == [None]

    for i in range(51, 71):  # with it, through a real scheduler
        monitor.update({**record(i), **bill(i)})
    monitor.epoch({**epoch_record(2, 70), **epoch_bill(5, [1.5, 2.5])})
    monitor.close()
    [fit] = fits_of(dashboard_url, monitor.fit_id)
    assert fit["status"] == "finished"
    assert fit["updates"]["update"] == list(range(1, 71))
    assert fit["info"] == {"schedule": "AdaDamp(initial=32)", "n_train": 1000}
    updates = fit["updates"]
    for column in ("workers_wanted", "workers_asked", "workers_present", "worker_s"):
        assert updates[column][50:] == [bill(i)[column] for i in range(51, 71)]
    assert updates["short"][50:] == [int(bill(i)["short"]) for i in range(51, 71)]
    assert updates["worker_s_total"][-1] == pytest.approx(
        sum(bill(i)["worker_s"] for i in range(51, 71)))
    assert {c: fit["epochs"][c] for c in (
        "worker_s", "updates_short", "scale_ups", "scale_lag_s", "scale_lag_max_s")} == {
        "worker_s": [None, 0.5], "updates_short": [None, 5], "scale_ups": [None, 2],
        "scale_lag_s": [None, 2.0], "scale_lag_max_s": [None, 2.5]}


class ReadMetrics(Callback):
    """Reads metrics.json while the fit runs."""

    def __init__(self, dashboard_url, known):
        self.dashboard_url = dashboard_url
        self.known = known
        self.seen = []

    def read(self, net, when):
        fits = get_json(self.dashboard_url + "/adadamp/metrics.json")["fits"]
        new = [f for f in fits if f["fit"] not in self.known]
        self.seen.append((when, len(net.history), new))

    def on_batch_end(self, net, **kwargs):
        self.read(net, "batch")

    def on_epoch_end(self, net, **kwargs):
        self.read(net, "epoch")


def test_metrics_json_during_a_real_fit(separate_cluster, separate_client,
                                        small_data):
    _, dashboard_url = separate_cluster
    X, y = small_data
    try:  # fits of earlier tests on this scheduler, if any
        known = {f["fit"] for f in
                 get_json(dashboard_url + "/adadamp/metrics.json")["fits"]}
    except urllib.error.HTTPError as exc:
        assert exc.code == 404  # no fit has installed the page yet
        known = set()
    reader = ReadMetrics(dashboard_url, known)
    est = make_classifier(client=separate_client, max_epochs=3,
                          callbacks=[("read_metrics", reader)])
    est.fit(X, y)

    assert reader.seen
    for _, _, new in reader.seen:
        [fit] = new
        assert fit["status"] == "running"
        assert "DaskClassifier" in fit["name"]
    # By the end of epoch 2 epoch 1's rows have been sent.
    _, _, [fit] = next(s for s in reader.seen if s[0] == "epoch" and s[1] >= 2)
    assert len(fit["updates"]["update"]) > 0
    assert fit["epochs"]["epoch"][:1] == [1]

    fits = get_json(dashboard_url + "/adadamp/metrics.json")["fits"]
    [fit] = [f for f in fits if f["fit"] not in known]
    n_updates = est.history[-1, "model_updates"]
    assert fit["status"] == "finished"
    assert fit["updates"]["update"] == list(range(1, n_updates + 1))
    batches = [b for epoch in est.history for b in epoch["batches"]]
    assert fit["updates"]["batch_size"] == [b["batch_size"] for b in batches]
    assert fit["updates"]["loss"] == pytest.approx(
        [b["train_loss"] for b in batches], rel=1e-6)
    assert fit["epochs"]["epoch"] == [1, 2, 3]
    # Epochs done after each update: every epoch ends on a whole number.
    ends = [i for i, e in enumerate(fit["updates"]["epoch"])
            if i + 1 == len(fit["updates"]["epoch"]) or fit["updates"]["epoch"][i + 1] != e]
    assert [fit["updates"]["epochs"][i] for i in ends] == [1.0, 2.0, 3.0]
    assert fit["updates"]["epochs"] == sorted(fit["updates"]["epochs"])
    assert fit["epochs"]["train_loss"] == pytest.approx(
        est.history[:, "train_loss"], rel=1e-6)
    # The resource bill, as the history has it (null where the fit records
    # none of it).
    for column in ("workers_wanted", "workers_asked", "workers_present", "worker_s"):
        assert fit["updates"][column] == [b.get(column) for b in batches], column
    assert fit["updates"]["short"] == [
        None if b.get("short") is None else int(b["short"]) for b in batches]
    for column in ("worker_s", "updates_short"):
        assert fit["epochs"][column] == [e.get(column) for e in est.history], column
    assert fit["epochs"]["scale_ups"] == [
        None if e.get("scale_lags_s") is None else len(e["scale_lags_s"])
        for e in est.history]
    # Where each update's time went, overall and per worker.
    assert fit["updates"]["compute_ms"] == [b["compute_ms"] for b in batches]
    assert fit["updates"]["comm_ms"] == [b["comm_ms"] for b in batches]
    calls = {}
    for b in batches:
        for addr in b["workers_ms"]:
            calls[addr] = calls.get(addr, 0) + 1
    assert {a: w["calls"] for a, w in fit["workers"].items()} == calls
    assert all(w["compute_ms"] > 0 and w["comm_ms"] >= 0
               for w in fit["workers"].values())


def test_scheduler_without_dask_adadamp_warns_and_training_goes_on(tmp_path):
    # The scheduler's environment lacks dask_adadamp: unpickling the plugin
    # fails there.
    proc, address, _ = start_scheduler(
        tmp_path, python_prefix="import sys; sys.modules['dask_adadamp'] = None")
    try:
        with Client(address, timeout=TIMEOUT) as client:
            with pytest.warns(RuntimeWarning, match="could not be registered"):
                monitor = FitMonitor(client, "Net")
            assert not monitor.enabled
            monitor.update(record(1))
            monitor.epoch(epoch_record(1, 1))
            monitor.close()
            assert client.get_events("adadamp") == ()
    finally:
        stop(proc)


def test_the_scheduler_side_imports_neither_torch_nor_skorch(tmp_path):
    # The scheduler imports dask_adadamp.dashboard in its event loop to
    # unpickle the plugin, and runs the plugin and the page there.
    proc, address, dashboard_url = start_scheduler(tmp_path)
    try:
        with Client(address, timeout=TIMEOUT) as client:
            monitor = FitMonitor(client, "Net", {"schedule": "AdaDamp()"})
            assert monitor.enabled
            monitor.update(record(1))
            monitor.epoch(epoch_record(1, 1))
            monitor.close()
            [fit] = fits_of(dashboard_url, monitor.fit_id)
            assert fit["status"] == "finished"
            assert "bokeh" in get_text(dashboard_url + "/adadamp").lower()

            def imported(dask_scheduler):
                import sys
                return {name: name in sys.modules for name in (
                    "dask_adadamp.dashboard", "dask_adadamp._plugin",
                    "dask_adadamp._page", "torch", "skorch",
                    "dask_adadamp.estimator")}

            assert client.run_on_scheduler(imported) == {
                "dask_adadamp.dashboard": True, "dask_adadamp._plugin": True,
                "dask_adadamp._page": True, "torch": False, "skorch": False,
                "dask_adadamp.estimator": False}
    finally:
        stop(proc)
