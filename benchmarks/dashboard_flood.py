"""What forged ``log_event("adadamp", ...)`` messages cost the scheduler.

Two measurements (issue 13, item 5), each under a minute:

1. **One message of 10^6 rows.** In this process: the time
   ``DashboardPlugin.log_event`` takes with a message whose ``updates``
   hold 10^6 rows (two columns), after a ``start`` of the same fit. Today's
   plugin refuses it from the columns' lengths, before reading a value.
   Also the plugin's time per row of valid messages of 70 and 2000 rows
   of all 12 update columns (the best of 5 runs of 8000 rows each).
2. **A flood, on a separate scheduler.** A ``dask scheduler`` process
   (no workers), so its resident memory (RSS) is its own. One client
   registers the plugin, then sends: 25 forged ``start`` messages, and
   ``FITS`` fits of ``MESSAGES`` messages each carrying ``ROWS`` rows whose
   values are 1000-byte strings (or bytes), plus a 4 MB ``info``. The
   scheduler's RSS is read before, at its peak (sampled every 50 ms) and
   after; then ``/adadamp/metrics.json`` is read (its status code), and a
   second client runs one legitimate fit (``FitMonitor``) that must show.
3. **Valid messages at the limits, on the same scheduler.** Then two
   clients each start 10 fits and send each 6 messages of 2000 rows of
   every column (distinct floats), the most the plugin takes: what the
   plugin keeps (thinned to at most 10,000 rows a fit) and what the
   scheduler's event log keeps (the last 1000 messages of the topic,
   distributed's own bound) make the largest growth a client can cause
   with messages that pass.

A tool, not a section of run_all.py (``--quick`` changes nothing: it is
short); its results are in ``results/dashboard_flood.md``.

    python benchmarks/dashboard_flood.py [--pythonpath DIR]

``--pythonpath DIR`` (or ``PYTHONPATH=DIR``) measures the ``dask_adadamp`` found in DIR (e.g. an
exported older commit): the scheduler gets the same environment, and the
output names the files both imported.
"""
import json
import math
import sys
import time
import urllib.error
import urllib.request

from distributed import Client

import dask_adadamp
from dask_adadamp import dashboard

from common import MIB, START_TIMEOUT, Peak, main, process_cluster, rss, table

TITLE = "Forged messages to the dashboard plugin"
ROWS_BIG = 10**6
FITS, MESSAGES, ROWS = 20, 10, 1000
TEXT = "x" * 1000


def time_big_message(repeat=3):
    """Seconds the plugin takes with one message of 10^6 rows (each run on
    a fresh plugin, after the fit's start): the median and all runs."""
    rows = {"update": list(range(ROWS_BIG)), "loss": [0.5] * ROWS_BIG}
    runs = []
    for _ in range(repeat):
        plugin = dashboard.DashboardPlugin()
        plugin.log_event("adadamp", {"fit": "big", "kind": "start",
                                     "name": "big", "client": None})
        start = time.perf_counter()
        try:
            plugin.log_event("adadamp", {"fit": "big", "kind": "updates",
                                         "updates": rows})
        except Exception:  # noqa: BLE001 - the scheduler would catch it too
            pass
        runs.append(time.perf_counter() - start)
    return sorted(runs)[len(runs) // 2], runs


def time_per_row(rows, repeat=5):
    """Best seconds per row the plugin takes with valid ``rows``-row
    messages of every update column."""
    msg = {"fit": "f", "kind": "updates",
           "updates": {c: [i + 0.5 for i in range(rows)]
                       for c in dashboard.UPDATE_COLUMNS}}
    n = max(1, 8000 // rows)
    best = math.inf
    for _ in range(repeat):
        plugin = dashboard.DashboardPlugin()
        plugin.log_event("adadamp", {"fit": "f", "kind": "start"})
        start = time.perf_counter()
        for _ in range(n):
            plugin.log_event("adadamp", msg)
        best = min(best, (time.perf_counter() - start) / (n * rows))
    return best


def rss_mib(pid):
    return rss(pid) / MIB


def status_of(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            json.load(response)
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def flood(client):
    """The forged messages; how many were sent and their bytes (approx.)."""
    sent = nbytes = 0
    for i in range(25):
        client.log_event("adadamp", {"fit": f"forged-{i}", "kind": "start",
                                     "client": client.id})
        sent += 1
    for f in range(FITS):
        fit = f"flood-{f}"
        client.log_event("adadamp", {"fit": fit, "kind": "start", "name": fit,
                                     "client": client.id,
                                     "info": {f"k{j}": TEXT for j in range(4000)}})
        sent, nbytes = sent + 1, nbytes + 4000 * len(TEXT)
        for m in range(MESSAGES):
            value = TEXT if m % 2 else TEXT.encode()
            client.log_event("adadamp", {"fit": fit, "kind": "updates",
                                         "updates": {"loss": [value] * ROWS}})
            sent, nbytes = sent + 1, nbytes + ROWS * len(TEXT)
    return sent, nbytes


def valid_flood(address):
    """Messages the plugin takes, at its limits, from two clients."""
    rows = 2000
    sent = 0
    for c in range(2):
        with Client(address, timeout=START_TIMEOUT) as client:
            for f in range(10):
                fit = f"valid-{c}-{f}"
                client.log_event("adadamp", {"fit": fit, "kind": "start",
                                             "client": client.id})
                for m in range(6):
                    base = (f * 6 + m) * rows
                    client.log_event("adadamp", {
                        "fit": fit, "kind": "updates",
                        "updates": {col: [base + i + 0.5 + k for i in range(rows)]
                                    for k, col in enumerate(dashboard.UPDATE_COLUMNS)}})
                    sent += 1
            # Stays connected until all is handled: its fits stay running.
            client.run_on_scheduler(lambda: None)
    return sent


def legit_fit_shows(address, url):
    with Client(address, timeout=START_TIMEOUT) as client:
        monitor = dashboard.FitMonitor(client, "legit", {"schedule": "x"})
        monitor.update({"update": 1, "loss": 0.5})
        monitor.close()
        try:
            with urllib.request.urlopen(
                    f"{url}/adadamp/metrics.json?fit={monitor.fit_id}",
                    timeout=30) as response:
                return len(json.load(response)["fits"]) == 1
        except urllib.error.HTTPError:
            return False


def run(quick=False):
    median, runs = time_big_message()
    per_row = {rows: time_per_row(rows) for rows in (70, 2000)}
    # No workers: the scheduler's RSS is what the messages leave in it.
    with process_cluster(0, dashboard_address="127.0.0.1:0") as cluster:
        address, url, pid = cluster.address, cluster.dashboard, cluster.scheduler.pid
        client = cluster.client
        scheduler_path = client.run_on_scheduler(
            lambda: __import__("dask_adadamp").__file__)
        dashboard.FitMonitor(client, "warm-up").close()
        time.sleep(0.5)
        # The 10^6 rows end to end: sent, decoded, handled (the log_event
        # call returns once the scheduler has handled it).
        client.log_event("adadamp", {"fit": "big", "kind": "start", "client": client.id})
        big = {"fit": "big", "kind": "updates", "updates": {
            "update": list(range(ROWS_BIG)), "loss": [0.5] * ROWS_BIG}}
        start = time.perf_counter()
        client.log_event("adadamp", big)
        big_round_trip = time.perf_counter() - start
        del big
        client.log_event("adadamp", {"fit": "big", "kind": "end"})
        time.sleep(0.5)
        before = rss_mib(pid)
        start = time.perf_counter()
        with Peak([pid]) as peak:
            sent, nbytes = flood(client)
            # One round trip after the last message: all handled.
            client.run_on_scheduler(lambda: None)
        flood_s = time.perf_counter() - start
        time.sleep(0.5)
        after = rss_mib(pid)
        status = status_of(url + "/adadamp/metrics.json")
        shows = legit_fit_shows(address, url)
        with Peak([pid]) as valid_peak:
            valid_sent = valid_flood(address)
        time.sleep(0.5)
        valid_after = rss_mib(pid)
    return {"dask_adadamp": dask_adadamp.__file__,
            "scheduler_dask_adadamp": scheduler_path,
            "big_message_s": median, "big_message_runs_s": runs,
            "big_message_round_trip_s": big_round_trip,
            "valid_s_per_row": per_row,
            "messages": sent, "flood_mb": nbytes / 1e6, "flood_s": flood_s,
            "rss_before_mib": before, "rss_peak_mib": peak.peak[pid] / MIB,
            "rss_after_mib": after, "metrics_status": status,
            "legit_fit_shows": shows, "valid_messages": valid_sent,
            "valid_rss_peak_mib": valid_peak.peak[pid] / MIB,
            "valid_rss_after_mib": valid_after}


def markdown(r):
    return "\n".join([
        f"dask_adadamp from `{r['dask_adadamp']}` (scheduler: "
        f"`{r['scheduler_dask_adadamp']}`).", "",
        table(["measurement", "measured"], [
            [f"the plugin's `log_event` with one message of 10^6 rows (median of "
             f"{len(r['big_message_runs_s'])})", f"{1e3 * r['big_message_s']:.1f} ms"],
            ["`client.log_event` of that message, round trip (sent, decoded, handled)",
             f"{1e3 * r['big_message_round_trip_s']:.0f} ms"],
            ["the plugin's time per row, valid messages of 70 / 2000 rows (best of 5)",
             f"{1e6 * r['valid_s_per_row'][70]:.2f} / "
             f"{1e6 * r['valid_s_per_row'][2000]:.2f} us"],
            [f"flood of {r['messages']} messages, ~{r['flood_mb']:.0f} MB, in "
             f"{r['flood_s']:.1f} s", f"scheduler RSS {r['rss_before_mib']:.0f} -> peak "
             f"{r['rss_peak_mib']:.0f} -> after {r['rss_after_mib']:.0f} MiB"],
            ["`/adadamp/metrics.json` after the flood", r["metrics_status"]],
            ["a legitimate fit from another client afterwards",
             "shows" if r["legit_fit_shows"] else "does NOT show"],
            [f"then {r['valid_messages']} valid messages of 2000 rows",
             f"RSS peak {r['valid_rss_peak_mib']:.0f}, after "
             f"{r['valid_rss_after_mib']:.0f} MiB"]])])


if __name__ == "__main__":
    main(sys.modules[__name__])
