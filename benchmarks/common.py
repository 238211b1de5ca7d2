"""What the benchmarks share: models, data, clocks, the machine's description."""
import argparse
import datetime
import os
import platform
import subprocess
import threading
import time

import numpy as np
import torch
from skorch.callbacks import Callback

from dask_adadamp.models import MLP

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
