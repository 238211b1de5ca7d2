"""Benchmark 4: memory of the client and of each worker during a fit.

Resident memory (RSS) is sampled at the end of every epoch; the data are
placed once, so after the first epochs nothing should grow.

    python benchmarks/memory.py [--quick]
"""
import os
import sys

import numpy as np
import psutil
import torch
from skorch.callbacks import Callback

from dask_adadamp import DaskClassifier

from common import MIB, local_cluster, main, model_kwargs, random_data, table

TITLE = "4. Memory"


def rss():
    return psutil.Process(os.getpid()).memory_info().rss


class MemoryLog(Callback):
    def __init__(self, client):
        self.client = client

    def on_epoch_end(self, net, **kwargs):
        net.history.record("client_rss", rss())
        net.history.record("worker_rss", sorted(self.client.run(rss).values()))


def run(quick=False):
    n, epochs = (20_000, 4) if quick else (40_000, 12)
    X, y = random_data(n, 784)
    with local_cluster(2) as client:
        before_client = rss()
        before_workers = sorted(client.run(rss).values())
        est = DaskClassifier(**model_kwargs("mlp-270k"), criterion=torch.nn.CrossEntropyLoss,
                             lr=0.01, batch_size=512, grads_per_worker=256,
                             max_epochs=epochs, train_split=None, random_state=0,
                             verbose=0, client=client,
                             callbacks=[("memory", MemoryLog(client))])
        est.fit(X, y)
        h = est.history
        client_rss = np.array(h[:, "client_rss"]) / MIB
        worker_rss = np.array(h[:, "worker_rss"]) / MIB
    return {
        "data_mib": (X.nbytes + y.nbytes) / MIB, "epochs": epochs,
        "updates": h[-1, "model_updates"],
        "client_before_mib": before_client / MIB,
        "client_mib": client_rss.tolist(),
        "workers_before_mib": (np.array(before_workers) / MIB).tolist(),
        "workers_mib": worker_rss.tolist(),
        # growth from the end of epoch 2 to the end of the last epoch
        "client_growth_mib": float(client_rss[-1] - client_rss[1]),
        "worker_growth_mib": (worker_rss[-1] - worker_rss[1]).tolist(),
    }


def goals(result):
    worst = max([result["client_growth_mib"]] + result["worker_growth_mib"])
    return [("no memory growth across epochs (< 5 MiB per process)", worst < 5,
             f"largest growth {worst:+.1f} MiB (memory)")]


def markdown(r):
    def mib(values):
        return ", ".join(f"{m:.0f}" for m in values)

    return "\n".join([
        f"Training data {r['data_mib']:.0f} MiB; 270k-parameter MLP, batch 512, 2 workers; "
        f"{r['epochs']} epochs, {r['updates']} updates. RSS in MiB.", "",
        table(["process", "before the fit", "end of epoch 2", "end of the fit",
               "growth epoch 2 -> end"],
              [["client", f"{r['client_before_mib']:.0f}", f"{r['client_mib'][1]:.0f}",
                f"{r['client_mib'][-1]:.0f}", f"{r['client_growth_mib']:+.1f}"],
               ["workers", mib(r["workers_before_mib"]), mib(r["workers_mib"][1]),
                mib(r["workers_mib"][-1]),
                ", ".join(f"{m:+.1f}" for m in r["worker_growth_mib"])]]),
    ])


if __name__ == "__main__":
    main(sys.modules[__name__])
