"""The dashboard's parts in one process, no cluster: the messages, the
plugin's store, the monitor (with a fake client) and the page's components."""
import json
import time
import warnings

import msgpack
import numpy as np
import pytest
from dashboard_helpers import bill, epoch_bill, epoch_record, record

from dask_adadamp import _messages as messages
from dask_adadamp import _monitor, _plugin, dashboard
from dask_adadamp.dashboard import DashboardPlugin, FitMonitor


class FakeClient:
    """Records what a monitor sends; ``fail`` makes a method raise."""

    def __init__(self, fail=()):
        self.id = "Client-fake"
        self.fail = fail
        self.registered = []
        self.sent = []

    def register_plugin(self, plugin, name=None):
        if "register" in self.fail:
            raise ModuleNotFoundError("No module named 'dask_adadamp'")
        self.registered.append((plugin, name))

    def log_event(self, topic, msg):
        if "log_event" in self.fail:
            raise OSError("scheduler gone")
        # What distributed would refuse to send.
        msgpack.packb(msg)
        self.sent.append((topic, msg))


# --- the plugin's bookkeeping -----------------------------------------------

def test_plugin_aggregates_messages():
    plugin = DashboardPlugin()
    plugin.log_event("adadamp", {"fit": "a", "kind": "start", "name": "Net a",
                                 "info": {"schedule": "AdaDamp(initial=32)"},
                                 "client": "Client-1"})
    rows = {c: [] for c in dashboard.UPDATE_COLUMNS}
    for i in (1, 2, 3):
        for c in dashboard.UPDATE_COLUMNS:
            rows[c].append(record(i).get(c, 0.1 * i))
    plugin.log_event("adadamp", {"fit": "a", "kind": "updates", "updates": rows,
                                 "epochs": {}, "signal_name": "loss_ratio"})
    plugin.log_event("other-topic", {"fit": "a", "kind": "end"})
    plugin.log_event("adadamp", "not a dict")

    [fit] = plugin.metrics()["fits"]
    assert fit["status"] == "running"
    assert fit["name"] == "Net a"
    assert fit["info"] == {"schedule": "AdaDamp(initial=32)"}
    assert fit["signal_name"] == "loss_ratio"
    assert fit["updates"]["update"] == [1, 2, 3]
    assert fit["updates"]["batch_size"] == [32, 32, 32]
    assert set(fit["updates"]) == set(dashboard.UPDATE_COLUMNS)
    assert fit["epochs"] == {c: [] for c in dashboard.EPOCH_COLUMNS}

    plugin.log_event("adadamp", {"fit": "a", "kind": "epoch",
                                 "epochs": {c: [v] for c, v in
                                            epoch_record(1, 3).items()}})
    plugin.log_event("adadamp", {"fit": "a", "kind": "end", "status": "finished"})
    doc = json.loads(json.dumps(plugin.metrics()))  # what the handler writes
    [fit] = doc["fits"]
    assert fit["status"] == "finished"
    assert fit["epochs"]["model_updates"] == [3]
    assert fit["epochs"]["valid_loss"] == [None]
    assert set(fit) == {"fit", "name", "info", "status", "started", "updated",
                        "signal_name", "updates", "epochs", "workers"}
    assert fit["started"] <= fit["updated"]
    assert plugin.metrics("nope") == {"fits": []}


def test_plugin_stays_bounded():
    plugin = DashboardPlugin(max_fits=3, max_rows=8)
    for name in "abcd":
        plugin.log_event("adadamp", {"fit": name, "kind": "start",
                                     "client": "Client-" + name})
    # One fit too many, and all are running: the new one is not kept (a
    # running fit is never evicted).
    assert list(plugin.fits) == ["a", "b", "c"]
    assert plugin.refused == {"running fits": 1}
    plugin.log_event("adadamp", {"fit": "b", "kind": "end", "status": "failed"})
    plugin.log_event("adadamp", {"fit": "e", "kind": "start"})
    # The oldest ended one goes to make room.
    assert list(plugin.fits) == ["a", "c", "e"]

    plugin.log_event("adadamp", {"fit": "a", "kind": "updates",
                                 "updates": {"update": list(range(1, 21))}})
    table = plugin.fits["a"].updates
    # Thinned, not cut: still the whole fit, every stride-th update.
    assert len(table) < 8
    assert table.columns["update"] == list(range(1, 21, table.stride))
    assert table.columns["loss"] == [None] * len(table)
    assert table.seen == 20 and table.version > 0

    # A client that leaves mid-fit never says "end".
    plugin.remove_client(None, "Client-c")
    assert plugin.fits["c"].status == "failed"
    assert plugin.fits["e"].status == "running"


def test_table_thins_as_one_row_at_a_time():
    """_Table.extend copies slices; it keeps the rows that appending one
    row at a time, thinning whenever full, would keep."""
    import random

    def reference(max_rows, batches):
        columns, stride, seen, version = {"a": [], "b": []}, 1, 0, 0
        for rows in batches:
            for i in range(max((len(v) for v in rows.values()), default=0)):
                if seen % stride == 0:
                    for name, column in columns.items():
                        column.append(rows[name][i] if name in rows else None)
                seen += 1
                if len(columns["a"]) >= max_rows:
                    for column in columns.values():
                        del column[1::2]
                    stride, version = 2 * stride, version + 1
        return columns, stride, seen, version

    rng = random.Random(0)
    for _ in range(500):
        max_rows, start, batches = rng.randint(2, 20), 0, []
        for _ in range(rng.randint(1, 8)):
            k = rng.randint(0, 40)
            batches.append({name: list(range(start, start + k))
                            for name in ("a", "b") if rng.random() < 0.7})
            start += k
        table = _plugin._Table(("a", "b"), max_rows)
        for rows in batches:
            table.extend(rows)
        assert (table.columns, table.stride, table.seen,
                table.version) == reference(max_rows, batches)


# --- untrusted messages (issue 13, item 5) --------------------------------------

def started(**kwargs):
    """A plugin with one running fit "a" (3 update rows, one epoch)."""
    plugin = DashboardPlugin(**kwargs)
    plugin.log_event("adadamp", {"fit": "a", "kind": "start", "name": "Net a",
                                 "info": {"schedule": "AdaDamp()"},
                                 "client": "Client-a"})
    plugin.log_event("adadamp", {
        "fit": "a", "kind": "epoch", "signal_name": "loss_ratio",
        "updates": {"update": [1, 2, 3], "loss": [0.9, 0.8, float("nan")]},
        "epochs": {"epoch": [1], "train_loss": [0.8]},
        "workers": {"tcp://w1": {"calls": 3, "compute_ms": 1.0, "comm_ms": 2.0}}})
    assert not plugin.refused
    return plugin


TOO_MANY_ROWS = {"update": [0] * 1_000_000}
BAD_MESSAGES = {
    "not a dict": "not a dict",
    "bytes": b"\xff" * 10,
    "None": None,
    "a bytes value in a row": {"fit": "a", "kind": "updates",
                               "updates": {"loss": [b"\xff"]}},
    "a str in a row": {"fit": "a", "kind": "updates", "updates": {"loss": ["0.5"]}},
    "a bool in a row": {"fit": "a", "kind": "updates", "updates": {"loss": [True]}},
    "an int past 64 bits": {"fit": "a", "kind": "updates",
                            "updates": {"update": [2**70]}},
    "an unknown column": {"fit": "a", "kind": "updates", "updates": {"x": [1]}},
    "columns of different lengths": {"fit": "a", "kind": "updates",
                                     "updates": {"update": [4, 5], "loss": [0.1]}},
    "rows not a dict": {"fit": "a", "kind": "updates", "updates": [[4, 0.1]]},
    "a column not a list": {"fit": "a", "kind": "updates", "updates": {"update": 4}},
    "10^6 rows": {"fit": "a", "kind": "updates", "updates": TOO_MANY_ROWS},
    "a list signal_name": {"fit": "a", "kind": "updates",
                           "signal_name": ["loss_ratio"]},
    "workers not dicts": {"fit": "a", "kind": "updates", "workers": {"w": [1, 2]}},
    "a str worker time": {"fit": "a", "kind": "updates",
                          "workers": {"w": {"calls": 1, "compute_ms": "1"}}},
    "too many workers": {"fit": "a", "kind": "updates",
                         "workers": {f"w{i}": {} for i in range(5000)}},
    "an unknown status": {"fit": "a", "kind": "end", "status": "exploded"},
    "an unknown kind": {"fit": "a", "kind": "reset"},
    "an unknown field": {"fit": "a", "kind": "updates", "payload": "x" * 10**6},
    "a second start": {"fit": "a", "kind": "start", "name": "hijacked"},
    "an unknown fit": {"fit": "zzz", "kind": "updates", "updates": {"update": [1]}},
    "a non-dict info": {"fit": "b", "kind": "start", "info": "not a dict"},
    "a bytes info value": {"fit": "b", "kind": "start", "info": {"k": b"\xff"}},
    "a long info value": {"fit": "b", "kind": "start", "info": {"k": "x" * 10**6}},
    "too much info": {"fit": "b", "kind": "start",
                      "info": {f"k{i}": i for i in range(10**4)}},
    "a long name": {"fit": "b", "kind": "start", "name": "x" * 10**6},
    "a long fit id": {"fit": "b" * 10**4, "kind": "start"},
    "an int fit id": {"fit": 7, "kind": "start"},
    "a list fit id": {"fit": ["b"], "kind": "start"},
    "a non-str client": {"fit": "b", "kind": "start", "client": ["Client-a"]},
}


@pytest.mark.parametrize("name", list(BAD_MESSAGES))
def test_a_bad_message_is_dropped_and_leaves_no_trace(name):
    pytest.importorskip("bokeh")
    plugin = started()
    page = dashboard.AdadampPage(plugin)
    page.update()
    before = plugin.metrics()
    plugin.log_event("adadamp", BAD_MESSAGES[name])  # never raises
    # Dropped and counted: the fit is as it was, and no other appeared.
    assert plugin.metrics() == before
    assert sum(plugin.refused.values()) == 1
    json.loads(messages.dumps(plugin.metrics()))
    page.update()
    assert page.fit_id == "a" and "Net a" in page.info.text


def test_a_message_of_a_million_rows_is_refused_from_its_length():
    plugin = started()
    msg = {"fit": "a", "kind": "updates",
           "updates": {"update": list(range(10**6)), "loss": [0.5] * 10**6}}
    start = time.perf_counter()
    plugin.log_event("adadamp", msg)
    seconds = time.perf_counter() - start
    assert plugin.refused == {"invalid": 1}
    assert plugin.fits["a"].updates.seen == 3
    # Reading the rows would take about 0.5 s; the lengths take microseconds.
    assert seconds < 0.05
    # A message at the limit is taken.
    rows = messages.MAX_MESSAGE_ROWS
    plugin.log_event("adadamp", {"fit": "a", "kind": "updates",
                                 "updates": {"update": list(range(rows))}})
    assert plugin.fits["a"].updates.seen == 3 + rows


def test_forged_starts_never_evict_a_running_fit():
    plugin = started()
    # 25 starts from one client: it gets MAX_RUNNING_PER_CLIENT places.
    for i in range(25):
        plugin.log_event("adadamp", {"fit": f"forged{i}", "kind": "start",
                                     "client": "Client-forger"})
    assert plugin.refused == {"client's running fits":
                              25 - dashboard.MAX_RUNNING_PER_CLIENT}
    # 25 more, each naming another client (or none): the places run out,
    # and the new fits are refused rather than evict a running one.
    for i in range(25):
        plugin.log_event("adadamp", {"fit": f"other{i}", "kind": "start",
                                     "client": f"Client-{i}" if i % 2 else None})
    assert len(plugin.fits) == dashboard.MAX_FITS
    assert plugin.refused["running fits"] > 0
    assert plugin.fits["a"].status == "running"
    plugin.log_event("adadamp", {"fit": "a", "kind": "updates",
                                 "updates": {"update": [4]}})
    assert plugin.fits["a"].updates.columns["update"][-1] == 4

    # Once the forger's client leaves, its fits are ended and make room.
    plugin.remove_client(None, "Client-forger")
    plugin.log_event("adadamp", {"fit": "new", "kind": "start",
                                 "client": "Client-new"})
    assert "new" in plugin.fits and "forged0" not in plugin.fits
    assert "a" in plugin.fits


def test_what_the_plugin_keeps_stays_bounded():
    import gc
    import tracemalloc

    plugin = DashboardPlugin(max_fits=4, max_rows=500)
    text = "x" * 1000

    def flood(fit, client):
        # Distinct strings (not one object repeated), as msgpack delivers.
        plugin.log_event("adadamp", {
            "fit": fit, "kind": "start", "client": client,
            "info": {f"k{i}": text + str(i) for i in range(100)}})
        plugin.log_event("adadamp", {"fit": fit, "kind": "start",
                                     "client": client})
        plugin.log_event("adadamp", {"fit": fit, "kind": "updates", "updates": {
            "loss": [text + str(i) for i in range(500)]}})

    # Only what this test and the library allocate counts: in a full run the
    # session's in-process schedulers and event loops allocate meanwhile, in
    # their own threads (seen: 109-115 kB over the bound, never alone).
    mine = [tracemalloc.Filter(True, __file__), tracemalloc.Filter(True, "*dask_adadamp*")]

    def traced():
        return sum(stat.size for stat in
                   tracemalloc.take_snapshot().filter_traces(mine).statistics("filename"))

    flood("warm-up", "Client-0")
    gc.collect()
    tracemalloc.start()
    try:
        before = traced()
        for f in range(12):
            flood(f"fit{f}", f"Client-{f % 3}")
        gc.collect()
        kept = traced() - before
    finally:
        tracemalloc.stop()
    # ~2 MB of strings went by: none of it stays (the fits' few numbers do).
    assert kept < 100_000
    assert plugin.refused["invalid"] == 2 * 13
    assert len(plugin.fits) == 4

    # Valid rows, many: at most max_fits x max_rows are kept.
    rows = {c: [0.5] * 2000 for c in dashboard.UPDATE_COLUMNS}
    for fit in list(plugin.fits):
        for _ in range(5):
            plugin.log_event("adadamp", {"fit": fit, "kind": "updates",
                                         "updates": rows})
    assert all(len(f.updates) <= 500 and f.updates.seen == 10_000
               for f in plugin.fits.values())


def test_messages_after_the_end_are_dropped():
    plugin = started()
    plugin.log_event("adadamp", {"fit": "a", "kind": "end"})
    before = plugin.metrics()
    plugin.log_event("adadamp", {"fit": "a", "kind": "updates",
                                 "updates": {"update": [4]}})
    plugin.log_event("adadamp", {"fit": "a", "kind": "end", "status": "failed"})
    assert plugin.metrics() == before
    assert plugin.refused == {"ended fit": 2}


def test_a_fit_whose_client_is_gone_is_evicted_first():
    class Scheduler:
        clients = {"Client-a": None}

    plugin = started(max_fits=2)
    plugin.scheduler = Scheduler()
    # A start naming a client the scheduler does not have is refused.
    plugin.log_event("adadamp", {"fit": "b", "kind": "start", "client": "Client-x"})
    assert plugin.refused == {"client not connected": 1}
    plugin.log_event("adadamp", {"fit": "b", "kind": "start", "client": "Client-a"})
    assert plugin.refused == {"client not connected": 1}
    assert list(plugin.fits) == ["a", "b"]
    # Client-a is gone (without a remove_client: a missed one): its running
    # fits no longer hold their places.
    Scheduler.clients = {"Client-c": None}
    plugin.log_event("adadamp", {"fit": "c", "kind": "start", "client": "Client-c"})
    assert list(plugin.fits) == ["b", "c"]


def test_refusals_are_logged_at_most_once_a_minute(monkeypatch):
    import logging

    class Lines(logging.Handler):
        def __init__(self):
            super().__init__(logging.WARNING)
            self.lines = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    lines = Lines()
    _plugin.logger.addHandler(lines)
    clock = [1000.0]
    monkeypatch.setattr(_plugin.time, "monotonic", lambda: clock[0])
    try:
        plugin = started()
        for _ in range(500):
            plugin.log_event("adadamp", {"fit": "a", "kind": "updates",
                                         "updates": {"loss": ["x"]}})
        clock[0] += dashboard.LOG_INTERVAL
        plugin.log_event("adadamp", "not a dict")
    finally:
        _plugin.logger.removeHandler(lines)
    assert len(lines.lines) == 2
    assert "dropped 1 message" in lines.lines[0]
    assert "dropped 500 message" in lines.lines[1]
    assert plugin.refused == {"invalid": 501}


def test_page_and_json_survive_whatever_is_stored():
    pytest.importorskip("bokeh")
    plugin = started()
    page = dashboard.AdadampPage(plugin)
    page.update()
    # Values no message can store any more, put there by hand: the page
    # and the JSON must still work (a bug, or a plugin of another version).
    fit = plugin.fits["a"]
    fit.info = "not a dict"
    fit.signal_name = ["loss_ratio"]
    fit.name = b"\xffname"
    fit.workers = {"w1": [1, 2], 2: {"calls": "x", "compute_ms": float("inf")}}
    fit.updates.columns["loss"][:] = [b"\xff", "0.5", float("nan")]
    fit.epochs.columns["train_loss"][0] = object()
    plugin.changes += 1
    for page in (page, dashboard.AdadampPage(plugin)):  # open, and new
        page.update()
        assert "name" in page.info.text and "not a dict" in page.info.text
        assert not page.signal_plot.visible
    # Rows that are not numbers show as gaps.
    assert np.isnan(page.sources["updates"].data["loss"]).all()
    assert list(page.sources["updates"].data["update"]) == [1, 2, 3]
    doc = json.loads(messages.dumps(plugin.metrics()))
    [fit] = doc["fits"]
    assert fit["updates"]["loss"] == ["\ufffd", "0.5", None]
    assert fit["info"] == "not a dict"
    # Even a value whose str raises, or a cycle.
    class Evil:
        def __str__(self):
            raise RuntimeError("no")
    cycle = []
    cycle.append(cycle)
    json.loads(messages.dumps({"fits": [Evil(), cycle, {Evil(): 1}]}))


def test_the_monitor_sends_only_what_the_plugin_takes(monkeypatch):
    monkeypatch.setattr(_monitor, "FLUSH_INTERVAL", 3600)
    client = FakeClient()
    monitor = FitMonitor(client, "N" * 1000, {f"k{i}": "v" * 1000 for i in range(100)})
    n = 2 * messages.MAX_MESSAGE_ROWS + 1
    for i in range(1, n + 1):
        monitor.update({**record(i), "loss": "0.5", "lr": True,
                        "signal_name": "s" * 1000},
                       workers={f"tcp://{i}.{'h' * 300}": [2.0, 1.0]})
    monitor.close()
    plugin = DashboardPlugin(max_rows=10 * n)
    for topic, msg in client.sent:
        plugin.log_event(topic, msg)
    assert not plugin.refused
    [fit] = plugin.metrics()["fits"]
    assert fit["updates"]["update"] == list(range(1, n + 1))
    assert fit["updates"]["loss"] == [None] * n  # not numbers
    assert len(fit["workers"]) == messages.MAX_WORKERS
    assert all(len(m["updates"]["update"]) <= messages.MAX_MESSAGE_ROWS
               for _, m in client.sent if "updates" in m)


# --- the monitor --------------------------------------------------------------

def test_monitor_buffers_and_flushes_on_epoch_and_close(monkeypatch):
    monkeypatch.setattr(_monitor, "FLUSH_INTERVAL", 3600)
    client = FakeClient()
    monitor = FitMonitor(client, "Net", {"schedule": "GeoDamp", "n_train": 300,
                                         "classes": [0, 1]})
    assert monitor.enabled
    assert [name for _, name in client.registered] == [dashboard.PLUGIN_NAME]
    [(topic, start)] = client.sent
    assert topic == "adadamp"
    assert start == {"fit": monitor.fit_id, "kind": "start", "name": "Net",
                     "info": {"schedule": "GeoDamp", "n_train": 300,
                              "classes": "[0, 1]"},
                     "client": "Client-fake"}

    for i in range(1, 11):
        rec = record(i)
        rec["loss"] = np.float32(rec["loss"])  # numpy scalars are converted
        rec["batch_size"] = np.int64(rec["batch_size"])
        monitor.update(rec)
    monitor.update({**record(11), "loss": float("nan")})
    assert len(client.sent) == 1  # buffered

    monitor.epoch(epoch_record(1, 11))
    assert len(client.sent) == 2
    msg = client.sent[1][1]
    assert msg["kind"] == "epoch"
    assert msg["updates"]["update"] == list(range(1, 12))
    assert msg["updates"]["loss"][-1] is None  # NaN: not JSON
    assert type(msg["updates"]["batch_size"][0]) is int
    assert msg["epochs"]["epoch"] == [1]
    assert msg["signal_name"] == "loss_ratio"
    times = msg["updates"]["time"]
    assert times == sorted(times) and times[0] >= 0

    monitor.update(record(12))
    monitor.close()
    monitor.close()
    monitor.update(record(13))
    kinds = [m["kind"] for _, m in client.sent]
    assert kinds == ["start", "epoch", "end"]
    assert client.sent[-1][1]["status"] == "finished"
    assert client.sent[-1][1]["updates"]["update"] == [12]

    # Rows are due once FLUSH_INTERVAL has passed since the last send.
    monkeypatch.setattr(_monitor, "FLUSH_INTERVAL", 0)
    client = FakeClient()
    monitor = FitMonitor(client, "Net")
    monitor.update(record(1))
    monitor.update(record(2))
    assert [m["kind"] for _, m in client.sent] == ["start", "updates", "updates"]
    with FitMonitor(client, "Net") as failing:
        failing.update(record(1))
        failing.close("failed")
    assert client.sent[-1][1]["status"] == "failed"


def test_monitor_never_raises():
    monitor = FitMonitor(FakeClient(fail=("log_event",)), "Net")
    assert monitor.enabled
    monitor.update(record(1))
    monitor.update({"update": object()})  # not a number: sent as None
    monitor.epoch(epoch_record(1, 1))
    monitor.close()


def test_registration_failure_warns_once_and_monitor_does_nothing():
    client = FakeClient(fail=("register",))
    with pytest.warns(RuntimeWarning, match="No module named 'dask_adadamp'"):
        monitor = FitMonitor(client, "Net")
    assert not monitor.enabled
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Once per client: the next fit does not warn again.
        again = FitMonitor(client, "Net")
        for m in (monitor, again):
            m.update(record(1))
            m.epoch(epoch_record(1, 1))
            m.close()
    assert client.sent == []


def test_the_resource_bill_goes_from_the_monitor_to_the_plugin(monkeypatch):
    monkeypatch.setattr(_monitor, "FLUSH_INTERVAL", 3600)
    client = FakeClient()
    monitor = FitMonitor(client, "Net")
    for i in range(1, 71):
        monitor.update({**record(i), **bill(i)})
    monitor.update(record(71))  # a record without the bill
    monitor.epoch({**epoch_record(1, 71), **epoch_bill(6, [2.0, 4.0])})
    monitor.epoch({**epoch_record(2, 71), **epoch_bill(0, [])})
    monitor.epoch(epoch_record(3, 71))  # an epoch without it
    monitor.close()
    plugin = DashboardPlugin()
    for topic, msg in client.sent:
        plugin.log_event(topic, msg)
    assert not plugin.refused
    [fit] = plugin.metrics()["fits"]
    updates, epochs = fit["updates"], fit["epochs"]
    bills = [bill(i) for i in range(1, 71)]
    for column in ("workers_wanted", "workers_asked", "workers_present",
                   "worker_s"):
        assert updates[column] == [b[column] for b in bills] + [None], column
    assert updates["n_workers"][:70] == [b["n_workers"] for b in bills]
    # A bool travels as 1 or 0 (msgpack and the checks take numbers only).
    assert updates["short"] == [int(b["short"]) for b in bills] + [None]
    assert sum(updates["short"][:70]) == 5  # updates 60-64
    # Cumulative, added by the monitor.
    assert updates["worker_s_total"][:70] == pytest.approx(
        np.cumsum([b["worker_s"] for b in bills]))
    assert updates["worker_s_total"][70] is None
    assert epochs["worker_s"] == [0.5, 0.5, None]
    assert epochs["updates_short"] == [6, 0, None]
    assert epochs["scale_ups"] == [2, 0, None]
    assert epochs["scale_lag_s"] == [3.0, None, None]
    assert epochs["scale_lag_max_s"] == [4.0, None, None]
    json.loads(messages.dumps(plugin.metrics()))


def test_the_bill_columns_are_optional_and_bounded_as_the_others():
    old = {"update": [1], "loss": [0.5], "n_workers": [1]}  # before the bill
    assert messages.check({"fit": "f", "kind": "updates", "updates": old})
    assert messages.check({"fit": "f", "kind": "epoch", "epochs": {
        "epoch": [1], "worker_s": [1.5], "updates_short": [2],
        "scale_ups": [1], "scale_lag_s": [0.4], "scale_lag_max_s": [0.4]}})
    for table, column, values in (
            ("updates", "short", [True]),           # a bool: the monitor sends 1
            ("updates", "workers_present", ["2"]),
            ("epochs", "scale_lag_s", [[1.0, 2.0]]),  # the monitor sends the mean
            ("epochs", "scale_lags_s", [1.0]),       # not a column: derived ones are
            ("updates", "worker_s", [0.1] * (messages.MAX_MESSAGE_ROWS + 1))):
        with pytest.raises(messages.Refused):
            messages.check({"fit": "f", "kind": "updates", table: {column: values}})
    # The largest message a monitor sends, every column of both tables full,
    # stays under the byte bound.
    n = messages.MAX_MESSAGE_ROWS
    msg = {"fit": "f", "kind": "epoch",
           "updates": {c: [0.5] * n for c in messages.UPDATE_COLUMNS},
           "epochs": {c: [0.5] * n for c in messages.EPOCH_COLUMNS},
           "workers": {f"tcp://{i:0>192}:1": {"calls": 1, "compute_ms": 1.0,
                                               "comm_ms": 1.0}
                       for i in range(messages.MAX_WORKERS)},
           "info": {f"{i:0>64}": "v" * messages.MAX_TEXT_CHARS
                    for i in range(messages.MAX_INFO_ITEMS)}}
    assert messages.check(msg)["kind"] == "epoch"


# --- the page's components, without a server -----------------------------------

def test_page_follows_the_latest_fit_and_streams_new_rows():
    pytest.importorskip("bokeh")
    plugin = DashboardPlugin(max_rows=8)
    page = dashboard.AdadampPage(plugin)
    page.update()  # no fit yet
    assert page.fit_id is None

    def send(fit, kind, start, stop, signal=True):
        rows = {c: [] for c in dashboard.UPDATE_COLUMNS}
        for i in range(start, stop):
            for c in dashboard.UPDATE_COLUMNS:
                rows[c].append(record(i, signal).get(c, 0.0))
        plugin.log_event("adadamp", {
            "fit": fit, "kind": kind, "updates": rows,
            "signal_name": "loss_ratio" if signal else None})

    send("a", "start", 1, 4)
    page.update()
    source = page.sources["updates"]
    assert page.fit_id == "a"
    assert list(source.data["update"]) == [1, 2, 3]
    assert page.signal_plot.visible
    assert page.signal_plot.title.text == "Loss ratio"
    send("a", "updates", 4, 6)
    page.update()
    assert list(source.data["update"]) == [1, 2, 3, 4, 5]
    send("a", "updates", 6, 10)  # past max_rows: thinned, sent again whole
    page.update()
    assert list(source.data["update"]) == plugin.fits["a"].updates.columns["update"]

    send("b", "start", 1, 3, signal=False)
    page.update()
    assert page.fit_id == "b" and page.select.value == "b"
    assert [k for k, _ in page.select.options] == ["b", "a"]
    assert list(source.data["update"]) == [1, 2]
    assert not page.signal_plot.visible

    # Picking an older fit stops following the latest.
    page.select.value = "a"
    assert page.fit_id == "a"
    send("c", "start", 1, 2)
    page.update()
    assert page.fit_id == "a"
    assert "running" in page.info.text


def test_page_shows_the_resource_bill():
    pytest.importorskip("bokeh")
    plugin = DashboardPlugin()
    page = dashboard.AdadampPage(plugin)
    client = FakeClient()
    monitor = FitMonitor(client, "Net")
    for i in range(1, 71):
        monitor.update({**record(i), **bill(i)})
    monitor.epoch({**epoch_record(1, 70), **epoch_bill(5, [2.0, 4.5])})
    for topic, msg in client.sent:
        plugin.log_event(topic, msg)
    page.update()
    [workers] = [f for f in page.plots if f.title.text == "Workers"]
    assert [item.label.value for item in workers.legend.items] == [
        "wanted", "asked", "present", "used", "short"]
    data = page.sources["updates"].data
    short = [int(u) for u, y in zip(data["update"], data["short_at"])
             if not np.isnan(y)]
    assert short == [60, 61, 62, 63, 64]
    assert list(data["short_at"][59:64]) == [1.0] * 5  # used: 1 of 2 wanted
    assert "Worker-seconds held (cumulative)" in [f.title.text for f in page.plots]
    assert data["worker_s_total"][-1] == pytest.approx(sum(
        bill(i)["worker_s"] for i in range(1, 71)))
    assert "worker-seconds held" in page.info.text
    assert "5 updates short of workers" in page.info.text
    assert "2 scale-ups, longest lag 4.5 s" in page.info.text
    # Streamed rows get their dots too.
    monitor.update({**record(71), **bill(71)})
    monitor.update(record(72))  # without the bill: no dot, no error
    monitor.close()
    for topic, msg in client.sent[len(client.sent) - 1:]:
        plugin.log_event(topic, msg)
    page.update()
    data = page.sources["updates"].data
    assert list(data["update"][-2:]) == [71, 72]
    assert np.isnan(data["short_at"][-1])
