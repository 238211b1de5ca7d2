"""Benchmark 1: seconds per model update, side by side.

DaskClassifier (constant batch, ``grads_per_worker = B / workers``) against a
plain single-process PyTorch loop and PyTorch DistributedDataParallel (gloo,
one process per worker, one thread each), on the same model, batch and data.
The Dask update is timed between consecutive updates inside one fit, so it
includes everything an update costs; its *overhead* is that time minus the
slowest of its tasks' compute (from the Dask task stream).

    python benchmarks/update_cost.py [--quick]
"""
import argparse
import os
import socket
import tempfile
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from distributed import Client, LocalCluster, get_task_stream

from dask_adadamp import DaskClassifier
from dask_adadamp.models import MLP

from common import (MODELS, N_CLASSES, UpdateClock, median_ms, model_kwargs,
                    n_params, random_data, table)


def plain_torch(model, batch, updates, threads=None):
    if threads:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return plain_torch(model, batch, updates)
        finally:
            torch.set_num_threads(before)
    n_features, hidden = MODELS[model]
    torch.manual_seed(0)
    module = MLP(n_features, N_CLASSES, hidden)
    opt = torch.optim.SGD(module.parameters(), lr=0.01)
    X, y = map(torch.from_numpy, random_data(batch * updates, n_features))
    times = []
    for k in range(updates):
        start = time.perf_counter()
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            module(X[k * batch:(k + 1) * batch]), y[k * batch:(k + 1) * batch])
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return np.array(times[2:])


def _ddp_rank(rank, world, port, model, batch, updates, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=world)
    n_features, hidden = MODELS[model]
    torch.manual_seed(0)
    module = torch.nn.parallel.DistributedDataParallel(
        MLP(n_features, N_CLASSES, hidden))
    opt = torch.optim.SGD(module.parameters(), lr=0.01)
    local = batch // world
    X, y = map(torch.from_numpy, random_data(local * updates, n_features, seed=rank))
    times = []
    dist.barrier()
    for k in range(updates):
        start = time.perf_counter()
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            module(X[k * local:(k + 1) * local]), y[k * local:(k + 1) * local])
        loss.backward()  # the all-reduce runs here
        opt.step()
        times.append(time.perf_counter() - start)
    if rank == 0:
        np.save(out, np.array(times[2:]))
    dist.destroy_process_group()


def ddp(model, batch, updates, world=2, tries=3):
    """DDP's update times; gloo's rendezvous fails now and then on a busy
    2-core machine, so a failed start is tried again on a fresh port."""
    for attempt in range(tries):
        try:
            return _ddp_once(model, batch, updates, world)
        except mp.ProcessExitedException:
            if attempt == tries - 1:
                raise


def _ddp_once(model, batch, updates, world):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "times.npy")
        mp.spawn(_ddp_rank, args=(world, port, model, batch, updates, out),
                 nprocs=world, join=True)
        return np.load(out)


def dask_adadamp(client, model, batch, updates, n_workers):
    n_features, _ = MODELS[model]
    clock = UpdateClock()
    est = DaskClassifier(
        **model_kwargs(model), criterion=torch.nn.CrossEntropyLoss, lr=0.01,
        batch_size=batch, grads_per_worker=batch // n_workers, max_epochs=1,
        train_split=None, random_state=0, verbose=0, client=client,
        callbacks=[("clock", clock)])
    X, y = random_data(batch * updates, n_features)
    with get_task_stream(client) as ts:
        est.fit(X, y)
    slowest = {}
    for task in ts.data:
        key = task["key"]
        if isinstance(key, tuple) and str(key[0]).startswith("adadamp-gradient"):
            compute = sum(s["stop"] - s["start"] for s in task["startstops"]
                          if s["action"] == "compute")
            slowest[key[1]] = max(slowest.get(key[1], 0.0), compute)
    update = np.diff(clock.starts)  # update k lasts from its start to k+1's
    compute = np.array([slowest[k + 1] for k in range(len(update))])
    return update[2:], compute[2:]


def run(quick=False, n_workers=2):
    updates = 12 if quick else 40
    rows = []
    with LocalCluster(n_workers=n_workers, threads_per_worker=1,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        for model in MODELS:
            for batch in (512, 4096):
                n = updates if (batch == 512 or model == "mlp-270k") else updates // 2
                ours, compute = dask_adadamp(client, model, batch, n, n_workers)
                plain = plain_torch(model, batch, n)
                plain1 = plain_torch(model, batch, n, threads=1)
                dp = ddp(model, batch, n, world=n_workers)
                rows.append({
                    "model": model, "params": n_params(model), "batch": batch,
                    "plain_ms": median_ms(plain), "plain_1thread_ms": median_ms(plain1),
                    "ddp_ms": median_ms(dp),
                    "dask_adadamp_ms": median_ms(ours),
                    "slowest_task_ms": median_ms(compute),
                    "overhead_ms": median_ms(ours - compute),
                    "vs_plain": float(np.median(ours) / np.median(plain)),
                    "vs_ddp": float(np.median(ours) / np.median(dp)),
                })
                print(rows[-1], flush=True)
    return {"workers": n_workers, "updates": updates, "rows": rows}


def markdown(result):
    lines = [f"{result['workers']} workers x 1 thread; medians of "
             f"{result['updates'] - 2} updates (fewer for the large model at 4096).", "",
             table(["model", "params", "batch", "plain torch (ms)", "plain, 1 thread (ms)",
                    "DDP (ms)", "dask-adadamp (ms)", "slowest task (ms)", "overhead (ms)",
                    "vs plain", "vs DDP"],
                   [[r["model"], f"{r['params']:,}", r["batch"], f"{r['plain_ms']:.1f}",
                     f"{r['plain_1thread_ms']:.1f}", f"{r['ddp_ms']:.1f}",
                     f"{r['dask_adadamp_ms']:.1f}", f"{r['slowest_task_ms']:.1f}",
                     f"{r['overhead_ms']:.1f}", f"{r['vs_plain']:.2f}x",
                     f"{r['vs_ddp']:.2f}x"] for r in result["rows"]])]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(markdown(run(args.quick, args.workers)))
