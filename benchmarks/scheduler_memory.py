"""Benchmark 7: memory of the scheduler and of the client while a fit's
numpy training data are placed on the workers.

The scheduler, and two workers (1 thread each), run as separate processes,
so that their resident memory (RSS) is their own. A DaskClassifier fits
about 1 GB of numpy data (``--quick``: about 200 MB) for one epoch. The
scheduler's, the client's and each worker's RSS are read with psutil at the
start, after a warm-up fit on 5 MiB (which loads torch and dask_adadamp in
every process, the scheduler included: its plugin), after creating the
data, every 50 ms during the fit (the peak is kept) and 1 s after the fit.
Growth is counted from after the warm-up. The data should go from the
client straight to the workers: the scheduler should grow by far less than
the data's size. The client holds the data; what it needs beyond them
(e.g. the shards' copies while they are sent) is its growth less the data.

    python benchmarks/scheduler_memory.py [--quick] [--pythonpath DIR]

``--pythonpath DIR`` (or ``PYTHONPATH=DIR`` in the environment) measures
the ``dask_adadamp`` found in DIR, e.g. a git worktree of an older commit;
the scheduler and the workers get the same PYTHONPATH. The result records
which ``dask_adadamp`` the client and the workers imported.
"""
import os
import sys
import time

import cloudpickle
import torch

import dask_adadamp
from dask_adadamp import DaskClassifier

from common import MIB, Peak, main, model_kwargs, process_cluster, random_data, rss, table

TITLE = "4b. Scheduler memory with 1 GB of numpy data"
N_FEATURES = 784
ROW_BYTES = 4 * N_FEATURES + 8  # float32 features, int64 label
SAMPLE_EVERY = 0.05  # seconds between two samples during the fit
WARMUP_ROWS = 8192


def _importer_path():
    import dask_adadamp
    return dask_adadamp.__file__


# Run on the workers and the scheduler, which cannot import this script
# (run_all imports it as a module): sent by value.
if __name__ != "__main__":  # __main__ is sent by value anyway
    cloudpickle.register_pickle_by_value(sys.modules[__name__])


def run(quick=False):
    n_rows = (200_000_000 if quick else 1_000_000_000) // ROW_BYTES
    epochs = 1
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with process_cluster(2, env=env) as cluster:
        client = cluster.client
        worker_paths = sorted(set(client.run(_importer_path).values()))
        scheduler_path = client.run_on_scheduler(_importer_path)
        me = os.getpid()
        pids = {"scheduler": cluster.scheduler.pid, "client": me,
                **{f"worker {i}": w.pid for i, w in enumerate(cluster.workers)}}

        def sample():
            return {name: rss(pid) / MIB for name, pid in pids.items()}

        def estimator():
            return DaskClassifier(**model_kwargs("mlp-270k"),
                                  criterion=torch.nn.CrossEntropyLoss, lr=0.01,
                                  batch_size=4096, grads_per_worker=2048,
                                  max_epochs=epochs, train_split=None,
                                  random_state=0, verbose=0, client=client)

        at_start = sample()
        # A warm-up fit on 8192 rows (5 MiB), so that "before" is measured
        # with torch, dask_adadamp and its scheduler plugin loaded where the
        # fit loads them: the growth that follows is the data's (and the
        # fit's bookkeeping).
        estimator().fit(*random_data(WARMUP_ROWS, N_FEATURES, seed=1))
        time.sleep(1.0)
        before = sample()
        X, y = random_data(n_rows, N_FEATURES)
        data_mib = (X.nbytes + y.nbytes) / MIB
        after_data = sample()
        est = estimator()
        start_fit = time.perf_counter()
        with Peak(list(pids.values()), SAMPLE_EVERY) as peak:
            est.fit(X, y)
        fit_seconds = time.perf_counter() - start_fit
        during = {name: peak.peak[pid] / MIB for name, pid in pids.items()}
        time.sleep(1.0)  # let the scheduler forget the fit's tasks
        after_fit = sample()
        updates = est.history[-1, "model_updates"]

    def growth(name, since):
        return during[name] - since[name]

    return {
        "dask_adadamp": dask_adadamp.__file__,
        "scheduler_dask_adadamp": scheduler_path,
        "workers_dask_adadamp": worker_paths,
        "pythonpath": os.environ.get("PYTHONPATH", ""),
        "rows": n_rows, "data_mib": data_mib, "epochs": epochs, "updates": int(updates),
        "fit_seconds": fit_seconds, "samples": peak.samples,
        "at_start_mib": at_start, "before_mib": before, "after_data_mib": after_data,
        "peak_fit_mib": during, "after_fit_mib": after_fit,
        # the scheduler: its peak during the fit less its RSS before the data
        "scheduler_growth_mib": growth("scheduler", before),
        "scheduler_growth_per_data": growth("scheduler", before) / data_mib,
        # the client: peak during the fit less before the data, less the data
        "client_growth_mib": growth("client", before),
        "client_growth_over_data_mib": growth("client", before) - data_mib,
        "client_growth_during_fit_mib": growth("client", after_data),
    }


def goals(result):
    return [("the scheduler holds no copy of numpy training data (growth <= 0.05x the "
             "data)", result["scheduler_growth_per_data"] <= 0.05,
             f"{result['scheduler_growth_mib']:+.0f} MiB for {result['data_mib']:.0f} MiB "
             f"of data ({result['scheduler_growth_per_data']:.2f}x; scheduler memory)")]


def markdown(r):
    names = list(r["before_mib"])
    stages = ["at_start_mib", "before_mib", "after_data_mib", "peak_fit_mib", "after_fit_mib"]
    rows = [[name] + [f"{r[stage][name]:.0f}" for stage in stages]
            + [f"{r['peak_fit_mib'][name] - r['before_mib'][name]:+.0f}"]
            for name in names]
    return "\n".join([
        f"Training data {r['data_mib']:.0f} MiB ({r['rows']} rows x {N_FEATURES} float32 "
        f"features); 270k-parameter MLP, batch 4096, grads_per_worker 2048; scheduler and "
        f"2 workers (1 thread each) in separate processes; {r['epochs']} epoch, "
        f"{r['updates']} updates in {r['fit_seconds']:.1f} s, {r['samples']} samples "
        f"50 ms apart. dask_adadamp from `{r['dask_adadamp']}` (scheduler: "
        f"`{r['scheduler_dask_adadamp']}`, workers: "
        + ", ".join(f"`{p}`" for p in r["workers_dask_adadamp"]) + "). RSS in MiB.", "",
        table(["process", "at start", "after a warm-up fit (before the data)",
               "after creating the data", "peak during the fit", "after the fit",
               "peak - before"], rows), "",
        f"- scheduler growth (peak during the fit - before the data): "
        f"{r['scheduler_growth_mib']:+.0f} MiB, {r['scheduler_growth_per_data']:.2f}x "
        f"the data",
        f"- client growth beyond the data (peak - before - data): "
        f"{r['client_growth_over_data_mib']:+.0f} MiB "
        f"(during the fit alone: {r['client_growth_during_fit_mib']:+.0f} MiB)",
    ])


if __name__ == "__main__":
    main(sys.modules[__name__])
