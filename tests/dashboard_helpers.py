"""Shared by the dashboard's tests: synthetic records, HTTP reads, and a
``dask scheduler`` in its own process (conftest's ``separate_cluster``
fixture adds a worker)."""
import json
import math
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


TIMEOUT = 30  # seconds: the most any wait in here may take
REPO = Path(__file__).resolve().parents[1]


def record(i, signal=True):
    """A synthetic update record with the shape of a real fit's."""
    rec = {"update": i, "epoch": 1 + (i - 1) // 50, "epochs": i / 50,
           "batch_size": 32 * 2 ** (i // 60), "lr": 0.1,
           "n_workers": min(4, 1 + i // 60),
           "loss": math.exp(-i / 80) + 0.02 * math.sin(i),
           "examples_per_s": 1000.0 * (1 + i // 60)}
    if signal:
        rec.update(signal_name="loss_ratio", signal=0.9 + 0.05 * math.cos(i))
    return rec


def epoch_record(epoch, updates):
    return {"epoch": epoch, "model_updates": updates,
            "train_loss": math.exp(-updates / 80), "valid_loss": None,
            "dur": 0.5}


def bill(i):
    """An update's resource bill: the batch wants one more worker every
    60 updates, the cluster follows 5 updates late; short while behind."""
    wanted = min(4, 1 + i // 60)
    present = min(4, 1 + max(i - 5, 0) // 60)
    return {"workers_wanted": wanted, "workers_asked": wanted,
            "workers_present": present, "n_workers": present,
            "worker_s": present * 0.01, "short": present < wanted}


def epoch_bill(updates_short, lags):
    return {"worker_s": 0.5, "updates_short": updates_short,
            "scale_lags_s": list(lags)}


def get_json(url):
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        return json.load(response)


def get_text(url):
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        return response.read().decode()


def get_response(url):
    """(status, headers, JSON or text) of a GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def start_scheduler(tmp, *, python_prefix=None):
    """A ``dask scheduler`` process; (process, address, dashboard url)."""
    scheduler_file = Path(tmp) / "scheduler.json"
    cli = ["-m", "distributed.cli.dask_scheduler"]
    if python_prefix:  # code to run first, e.g. to hide a package
        cli = ["-c", python_prefix + "; from distributed.cli.dask_scheduler "
               "import main; main()"]
    # The process writes to its own copy of the file descriptor.
    with open(Path(tmp) / "scheduler.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, *cli, "--host", "127.0.0.1", "--port", "0",
             "--dashboard-address", "127.0.0.1:0", "--scheduler-file",
             str(scheduler_file)],
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            info = json.loads(scheduler_file.read_text())
            break
        except (OSError, ValueError):
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                raise RuntimeError("the scheduler did not start: "
                                   + (Path(tmp) / "scheduler.log").read_text())
            time.sleep(0.05)
    dashboard_url = f"http://127.0.0.1:{info['services']['dashboard']}"
    return proc, info["address"], dashboard_url


def stop(*procs):
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def fits_of(dashboard_url, fit_id):
    return get_json(f"{dashboard_url}/adadamp/metrics.json?fit={fit_id}")["fits"]

