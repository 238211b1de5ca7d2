"""What the benchmarks share: models, data, clocks, the machine's description."""
import argparse
import contextlib
import datetime
import logging
import math
import os
import platform
import subprocess
import threading
import time

import numpy as np
import torch
from distributed import Client, LocalCluster
from sklearn.model_selection import train_test_split
from skorch.callbacks import Callback

from dask_adadamp.datasets import mnist1d
from dask_adadamp.models import MLP

# The learning rates every tuned run chooses from (on a validation split).
LRS = (0.01, 0.03, 0.1, 0.3)

N_CLASSES = 10
# name -> (n_features, hidden widths)
MODELS = {
    "mlp-270k": (784, (256, 256)),
    "mlp-3.7M": (784, (2048, 1024)),
}


def model_kwargs(name):
    n_features, hidden = MODELS[name]
    return dict(module=MLP, module__n_features=n_features,
                module__n_classes=N_CLASSES, module__hidden=hidden)


def n_params(name):
    n_features, hidden = MODELS[name]
    return sum(p.numel() for p in MLP(n_features, N_CLASSES, hidden).parameters())


def random_data(n, n_features, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features)).astype("float32")
    y = rng.integers(0, N_CLASSES, size=n).astype("int64")
    return X, y


@contextlib.contextmanager
def local_cluster(n_workers=2, **kwargs):
    """A client of a LocalCluster of ``n_workers`` 1-thread worker processes.

    Its processes log only critical messages: when many workers close at
    once on a busy machine, their heartbeats race the closing scheduler and
    distributed logs CommClosedError tracebacks that say nothing about the
    benchmark. Errors of a benchmark's own work raise in this process.
    """
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, dashboard_address=":0",
                      silence_logs=logging.CRITICAL, **kwargs) as cluster, \
            Client(cluster) as client:
        yield client


def mnist1d_split(seed=0):
    """MNIST-1D with a validation split: ``(X_train, X_valid, X_test,
    y_train, y_valid, y_test)``.

    The validation rows (a stratified fifth, seeded) are carved from
    MNIST-1D's 4000 training rows; they choose every learning rate and set
    every target. The 1000 test rows are only reported.
    """
    X, X_test, y, y_test = mnist1d()
    X_train, X_valid, y_train, y_valid = train_test_split(
        X, y, test_size=0.2, stratify=y, random_state=seed)
    return X_train, X_valid, X_test, y_train, y_valid, y_test


class Scores(Callback):
    """Accuracy on the validation and test rows after every epoch.

    Records ``valid_acc``, ``test_acc`` and ``elapsed`` (seconds since the
    fit began, without the time spent scoring the test rows, which only
    the report reads). Stops the fit (skorch's KeyboardInterrupt) when the
    validation accuracy reaches ``target``, when ``elapsed`` passes
    ``budget`` seconds (a run that cannot beat a better one), or when the
    training loss is no longer finite (diverged).
    """

    def __init__(self, X_valid, y_valid, X_test, y_test, target=None, budget=None):
        self.X_valid, self.y_valid = X_valid, y_valid
        self.X_test, self.y_test = X_test, y_test
        self.target, self.budget = target, budget

    def on_train_begin(self, net, **kwargs):
        self.start, self.aside = time.perf_counter(), 0.0

    def on_epoch_end(self, net, **kwargs):
        valid = float(np.mean(net.predict(self.X_valid) == self.y_valid))
        elapsed = time.perf_counter() - self.start - self.aside
        before = time.perf_counter()
        test = float(np.mean(net.predict(self.X_test) == self.y_test))
        self.aside += time.perf_counter() - before
        net.history.record("valid_acc", valid)
        net.history.record("test_acc", test)
        net.history.record("elapsed", elapsed)
        loss = net.history[-1].get("train_loss", 0.0)
        if ((self.target is not None and valid >= self.target)
                or (self.budget is not None and elapsed > self.budget)
                or not math.isfinite(loss)):
            raise KeyboardInterrupt  # skorch's way to end a fit early


def choose(fit, lrs, score):
    """Fit at every learning rate of ``lrs`` and keep the best.

    ``fit(lr, best)`` returns a run (a dict) given the best run so far (or
    None), which it may use to stop early; ``score(run)`` orders runs, lower
    is better. Returns ``(best, runs)``, ``runs`` mapping each rate to its
    run.
    """
    best, runs = None, {}
    for lr in lrs:
        runs[lr] = run = fit(lr, best)
        if best is None or score(run) < score(best):
            best = run
    return best, runs


class UpdateClock(Callback):
    """Wall-clock time between the starts of consecutive model updates."""

    def initialize(self):
        self.starts = []
        return self

    def on_batch_begin(self, net, training=False, **kwargs):
        if training:
            self.starts.append(time.perf_counter())

    def seconds(self, skip=2):
        """Update durations, without the first ``skip`` (warm-up)."""
        return np.diff(self.starts)[skip:]


def machine():
    """Where and with what the numbers were measured."""
    import dask
    import distributed
    import skorch
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                   f"{_memory_gib():.0f} GiB, {_cpu_name()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "dask": dask.__version__,
        "distributed": distributed.__version__,
        "skorch": skorch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def commit():
    """The repository's short commit hash, with ``+dirty`` when tracked files
    differ from it (untracked files do not count); ``"unknown"`` outside git."""
    here = os.path.dirname(os.path.abspath(__file__))

    def git(*args):
        return subprocess.run(["git", *args], cwd=here, capture_output=True,
                              text=True, check=True).stdout.strip()
    try:
        short = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return short + ("+dirty" if dirty else "")


def _memory_gib():
    import psutil
    return psutil.virtual_memory().total / 2**30


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def median_ms(seconds):
    return float(1e3 * np.median(seconds))


def table(header, rows):
    """A Markdown table from column names and rows of formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def main(run, markdown):
    """Command line of one benchmark: ``--quick`` for a smoke run."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer updates")
    print(markdown(run(parser.parse_args().quick)))


def rss(pid):
    """Resident memory of process ``pid`` in bytes (NaN once it is gone)."""
    import psutil
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return float("nan")


class Peak(threading.Thread):
    """Samples the RSS of ``pids`` every ``every`` seconds from a background
    thread and keeps each one's maximum (``peak``, bytes by pid)."""

    def __init__(self, pids, every=0.05):
        super().__init__(daemon=True)
        self.pids, self.every = pids, every
        self.peak = {pid: rss(pid) for pid in pids}
        self.samples = 0
        self._halt = threading.Event()

    def run(self):
        while not self._halt.wait(self.every):
            for pid in self.pids:
                self.peak[pid] = max(self.peak[pid], rss(pid))
            self.samples += 1

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self._halt.set()
        self.join()
        for pid in self.pids:  # one last sample at the very end
            self.peak[pid] = max(self.peak[pid], rss(pid))


def stop_processes(procs, timeout=10):
    """End the processes, the last started first: SIGTERM, then SIGKILL
    after ``timeout`` seconds."""
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
    for proc in reversed(procs):
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
