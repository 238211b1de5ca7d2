"""What the benchmarks share: the protocol, models, data, clusters, clocks,
the machine's description.

The protocol. Every benchmark module (a section of ``run_all.py``, or a
tool run on its own) has:

* ``TITLE``: its heading (a section's number and name);
* ``run(quick=False, **options) -> dict``: measures, and returns what it
  measured as JSON-able values (``quick``: a smoke run);
* ``markdown(result) -> str``: its tables;
* ``goals(result) -> [(goal, met, measured)]`` where it has goals: each
  goal's text, whether ``result`` meets it, and what was measured (and
  which benchmark it comes from);
* optionally ``OPTIONS`` (command-line flags beside ``--quick``, each a
  keyword of ``run``) and ``READS`` (keywords of ``run`` that take another
  section's result of the same commit: keyword -> section; see run_all.py);
* at its end the same two lines, ``if __name__ == "__main__":`` and
  ``main(sys.modules[__name__])``.

Scripts import nothing from each other, only from this module.
"""
import argparse
import contextlib
import copy
import datetime
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import types

import numpy as np
import torch
from distributed import Client, LocalCluster
from sklearn.model_selection import train_test_split
from skorch.callbacks import Callback, LRScheduler

from dask_adadamp import DaskClassifier
from dask_adadamp.dampers import GeoDamp, NoiseScaleDamp
from dask_adadamp.datasets import mnist1d
from dask_adadamp.models import MLP
from dask_adadamp.simulate import batch_sizes

MIB = 2**20
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


START_TIMEOUT = 60  # seconds for a scheduler or a worker process to come up
STOP_TIMEOUT = 10  # seconds for a process to end before it is killed


@contextlib.contextmanager
def process_cluster(n_workers=2, env=None, dashboard_address=":0"):
    """A scheduler and ``n_workers`` 1-thread workers (no nanny), each a
    process of its own so that its resident memory (RSS) is its own, and a
    client of them (which waits for the workers).

    Yields a namespace: ``client``, ``address``, ``dashboard`` (the URL of
    the scheduler's dashboard), ``scheduler`` and ``workers`` (``Popen``s).
    ``env`` is every process's environment (default: this process's). On
    exit the client closes, then the processes end, the last started first.
    """
    procs, logs = [], []
    with tempfile.TemporaryDirectory(prefix="benchmark-cluster-") as tmp:
        def start(args, name):
            logs.append(open(os.path.join(tmp, f"{name}.log"), "w"))
            # cwd: a directory without a dask_adadamp in it, so that
            # ``python -m`` (cwd first on sys.path) finds the same one as
            # this process (PYTHONPATH, else the installed one).
            procs.append(subprocess.Popen([sys.executable, "-m", *args], cwd=tmp, env=env,
                                          stdout=logs[-1], stderr=subprocess.STDOUT))
            return procs[-1]

        scheduler_file = os.path.join(tmp, "scheduler.json")
        try:
            scheduler = start(["distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", "0", "--dashboard-address", dashboard_address,
                               "--scheduler-file", scheduler_file], "scheduler")
            _wait_for_file(scheduler_file, scheduler, logs[0].name)
            with open(scheduler_file) as f:
                info = json.load(f)
            workers = [start(["distributed.cli.dask_worker", "--scheduler-file",
                              scheduler_file, "--host", "127.0.0.1", "--nthreads", "1",
                              "--no-nanny", "--no-dashboard", "--memory-limit", "0",
                              "--name", f"worker-{i}"], f"worker-{i}")
                       for i in range(n_workers)]
            with Client(scheduler_file=scheduler_file, timeout=START_TIMEOUT) as client:
                if n_workers:
                    client.wait_for_workers(n_workers, timeout=START_TIMEOUT)
                yield types.SimpleNamespace(
                    client=client, address=info["address"],
                    dashboard=f"http://127.0.0.1:{info['services']['dashboard']}",
                    scheduler=scheduler, workers=workers)
        finally:
            stop_processes(procs, STOP_TIMEOUT)
            for log in logs:
                log.close()


def _wait_for_file(path, proc, log):
    deadline = time.monotonic() + START_TIMEOUT
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            with open(log) as f:
                tail = f.read()[-3000:]
            raise RuntimeError(f"the scheduler did not start; its log ends:\n{tail}")
        time.sleep(0.1)
    time.sleep(0.2)  # the file is written in one go, but give it a moment


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


# MNIST-1D's model and optimizer, for sections 3, 6 and 7 and the figure of
# history_figure.py; B0 is the first batch size of every schedule.
MNIST1D_NET = dict(module=MLP, module__n_features=40, module__hidden=(256, 256),
                   criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
                   optimizer__momentum=0.9)
B0 = 32

# The runs of section 6 (dampers_mnist1d.py), which section 7
# (simulate_paper.py) simulates: here, so that each can make them.
MNIST1D_EPOCHS = 20
MNIST1D_QUICK_EPOCHS, MNIST1D_QUICK_LRS = 3, (0.03, 0.1)
MNIST1D_FIT = dict(MNIST1D_NET, grads_per_worker=64, train_split=None, random_state=0,
                   verbose=0)
MNIST1D_SGD = f"SGD, batch {B0}"
MNIST1D_GEO = "GeoDamp, x2 every 3 epochs"
# name -> parameters beside MNIST1D_FIT (the learning rate is chosen).
MNIST1D_RUNS = {
    MNIST1D_SGD: dict(batch_size=B0),
    f"SGD, batch {B0}, lr /2 every 3 epochs": dict(
        batch_size=B0, callbacks=[("step", LRScheduler(
            torch.optim.lr_scheduler.StepLR, step_size=3, gamma=0.5))]),
    MNIST1D_GEO: dict(batch_size=GeoDamp(initial=B0, factor=2, delay=3)),
    f"SGD, batch {B0}, at GeoDamp's lr": dict(batch_size=B0),
    "NoiseScaleDamp, 0.2 B_noise": dict(
        batch_size=NoiseScaleDamp(initial=B0, scale=0.2, beta=0.99)),
    "SGD, batch 1024": dict(batch_size=1024),
}
# Runs that take another run's chosen rate instead of choosing their own.
MNIST1D_SAME_LR = {f"SGD, batch {B0}, at GeoDamp's lr": MNIST1D_GEO}


def mnist1d_fit(name, lr, epochs, data, client):
    """One fit of ``MNIST1D_RUNS[name]`` at ``lr``: its per-epoch curve, its
    per-update batch sizes and its seconds."""
    X, X_valid, X_test, y, y_valid, y_test = data
    params = copy.deepcopy(MNIST1D_RUNS[name])  # fresh callbacks and schedule
    scores = Scores(X_valid, y_valid, X_test, y_test)
    callbacks = [("scores", scores)] + params.pop("callbacks", [])
    est = DaskClassifier(**MNIST1D_FIT, **params, lr=lr, max_epochs=epochs,
                         client=client, callbacks=callbacks).fit(X, y)
    curve = [{"epoch": row["epoch"], "valid_acc": row["valid_acc"],
              "test_acc": row["test_acc"], "model_updates": row["model_updates"],
              "n_examples": row["n_examples"], "batch_size": row["batch_size"],
              "seconds": row["elapsed"]} for row in est.history]
    print(f"{name}, lr {lr}: valid", [round(r["valid_acc"], 3) for r in curve], flush=True)
    return {"run": name, "lr": lr, "curve": curve,
            "update_batch_sizes": batch_sizes(est.history),
            "seconds": curve[-1]["seconds"]}


def mnist1d_runs(quick=False):
    """Every run of ``MNIST1D_RUNS`` on 2 local workers, each at the rate of
    ``LRS`` with the best final validation accuracy (``tried``: each rate's)
    or at the rate of the run ``MNIST1D_SAME_LR`` names (``lr_from``)."""
    epochs, lrs = ((MNIST1D_QUICK_EPOCHS, MNIST1D_QUICK_LRS) if quick
                   else (MNIST1D_EPOCHS, LRS))
    data = mnist1d_split()
    chosen = {}
    with local_cluster(2) as client:
        for name in MNIST1D_RUNS:
            if name in MNIST1D_SAME_LR:
                lr = chosen[MNIST1D_SAME_LR[name]]["lr"]
                chosen[name] = {**mnist1d_fit(name, lr, epochs, data, client),
                                "tried": {}, "lr_from": MNIST1D_SAME_LR[name]}
                continue
            best, runs = choose(
                lambda lr, best: mnist1d_fit(name, lr, epochs, data, client),
                lrs, score=lambda r: -r["curve"][-1]["valid_acc"])
            chosen[name] = {**best, "tried": {str(lr): r["curve"][-1]["valid_acc"]
                                              for lr, r in runs.items()}}
    return {"epochs": epochs, "lrs": list(lrs), "n_train": len(data[0]),
            "n_valid": len(data[1]), "n_test": len(data[2]), "runs": chosen}


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


@contextlib.contextmanager
def torch_threads(n):
    """torch on ``n`` threads inside, its setting restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def table(header, rows):
    """A Markdown table from column names and rows of formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def goals_table(goals):
    """The Markdown table of ``(goal, met, measured)`` rows (``met`` None:
    not measured)."""
    return table(["goal", "measured (where from)", "met"],
                 [[goal, measured, "-" if met is None else "yes" if met else "no"]
                  for goal, met, measured in goals])


def main(module, argv=None):
    """The command line of a benchmark ``module`` (see the protocol above):
    run it, then print its tables and its goals.

    ``--quick`` for a smoke run, the module's ``OPTIONS`` beside it,
    ``--json PATH`` to keep the result, ``--pythonpath DIR`` to measure the
    ``dask_adadamp`` found in DIR.
    """
    parser = argparse.ArgumentParser(description=module.TITLE)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: smaller and shorter")
    parser.add_argument("--json", metavar="PATH", help="also write the result to PATH")
    parser.add_argument("--pythonpath", metavar="DIR",
                        help="measure the dask_adadamp found in DIR (e.g. a worktree of "
                        "an older commit): DIR goes first on PYTHONPATH, which every "
                        "process of the benchmark inherits")
    for flag, kwargs in getattr(module, "OPTIONS", {}).items():
        parser.add_argument(flag, **kwargs)
    argv = sys.argv[1:] if argv is None else list(argv)
    options = vars(parser.parse_args(argv))
    path, json_path = options.pop("pythonpath"), options.pop("json")
    if path is not None:
        # Start again with DIR on PYTHONPATH: this process has imported
        # dask_adadamp already, and the processes it starts inherit the path.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [os.path.abspath(path)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
        os.execve(sys.executable, [sys.executable, os.path.abspath(module.__file__),
                                   *_without_pythonpath(argv)], env)
    m = machine()  # stamped before it runs: the code the run measures
    print(f"# {module.TITLE}\n\ncommit {m['commit']}, {m['date']}; {m['machine']}\n",
          flush=True)
    result = module.run(**options)
    print(module.markdown(result))
    if hasattr(module, "goals"):
        print("\n" + goals_table(module.goals(result)))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=1)
    return result


def _without_pythonpath(argv):
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--pythonpath":
            skip = True
        elif not arg.startswith("--pythonpath="):
            out.append(arg)
    return out


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


def stop_processes(procs, timeout=STOP_TIMEOUT):
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
