"""Plain helpers for the tests: functions of their arguments, no fixtures
and no state (those are in conftest.py).

Imported by name (``from helpers import make_classifier``): pytest puts
this folder on ``sys.path`` for the test modules, and workers that must
unpickle a class defined here get this module by value
(``cloudpickle.register_pickle_by_value``, the ``by_value`` fixture).
"""
import os
import time

import torch

from dask_adadamp import DaskClassifier
from dask_adadamp.models import MLP


def make_classifier(**kwargs):
    """A small seeded MLP classifier for 64 features; ``kwargs`` override."""
    params = dict(module=MLP, module__n_features=64, module__hidden=32,
                  criterion=torch.nn.CrossEntropyLoss, lr=0.1,
                  batch_size=128, grads_per_worker=64, max_epochs=2,
                  train_split=None, random_state=0, verbose=0)
    params.update(kwargs)
    return DaskClassifier(**params)


def weights(est):
    """A fitted net's parameters as one flat tensor (a copy)."""
    return torch.nn.utils.parameters_to_vector(
        est.module_.parameters()).detach().clone()


def adadamp_keys(client, timeout=10):
    """Keys of dask-adadamp left on the scheduler once released keys are
    forgotten (the client tells the scheduler asynchronously)."""
    def keys(dask_scheduler):
        return [k for k in dask_scheduler.tasks if "adadamp" in str(k)]

    deadline = time.monotonic() + timeout
    while (left := client.run_on_scheduler(keys)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def slow_start(seconds):
    """A worker ``preload`` (the text of a module) whose ``dask_setup``
    waits ``seconds`` before the worker registers: a worker that takes as
    long to come as one from a job queue, in a LocalCluster."""
    return ("import asyncio\n"
            "async def dask_setup(worker):\n"
            f"    await asyncio.sleep({float(seconds)!r})\n")


class DiesOnCue(MLP):
    """An MLP whose forward pass, in training, exits its worker process the
    first time a cue file exists (the process that removes it dies).

    Only for process-based clusters: in-process, it would end the tests.
    """

    def __init__(self, *args, cue="", **kwargs):
        super().__init__(*args, **kwargs)
        self.cue = cue

    def forward(self, X):
        if self.training and self.cue:
            # A file as the cue, or a folder of cues: one per process to kill.
            cues = ([os.path.join(self.cue, f) for f in sorted(os.listdir(self.cue))]
                    if os.path.isdir(self.cue) else [self.cue])
            for cue in cues:
                try:
                    os.remove(cue)
                except FileNotFoundError:
                    continue
                os._exit(1)
        return super().forward(X)


class FailsInTraining(torch.nn.Module):
    """Fits the data on the client's checks (eval mode), fails on a worker."""

    def __init__(self, n_features=64, hidden=None):
        super().__init__()
        self.linear = torch.nn.Linear(n_features, 2)

    def forward(self, X):
        if self.training:
            raise RuntimeError("this module fails in training")
        return self.linear(X)
