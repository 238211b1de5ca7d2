"""Benchmark 5: the claim of AdaDamp on a strongly convex problem.

Least squares on generated data, ``F(w) = mean((x_i . w - y_i)^2)`` (torch's
``MSELoss``), a linear model without bias started at ``w = 0``, and the
exact optimum ``F*`` from ``numpy.linalg.lstsq``. Every schedule trains
with plain SGD (no momentum) on a 2-worker local cluster until
``F(w) - F* <= eps`` (evaluated exactly on the client after every update),
and the table counts model updates and examples processed. The claim:
AdaDamp needs about as few updates as gradient descent and about as few
examples as constant-batch SGD (within 2x of each).

Each schedule uses its own best learning rate from one grid (``LRS``, the
fewest updates to eps), chosen by code in every run on a problem of its own
(``TUNE_SEED``): the claim is checked on seeds that took no part in
choosing.

AdaDamp evaluates the training loss, which reads examples too: the table
gives the gradients' examples and the loss evaluations' side by side, for
AdaDamp as the paper states it (the whole training set before every
update) and with ``dwell`` and ``approx`` (a fraction of the rows, every
few updates). Goals (``goals``): AdaDamp within 2x gradient descent's model
updates and within 2x constant-batch SGD's examples, each saying which
examples it counts.

    python benchmarks/strongly_convex.py [--quick]

``--quick`` runs the small problem that tests/test_benchmarks.py checks.
"""
import math
import sys
from contextlib import nullcontext

import numpy as np
import torch
from skorch.callbacks import Callback

from common import local_cluster, main, table
from dask_adadamp import DaskRegressor
from dask_adadamp.dampers import (AdaDamp, Constant, GeoDamp, GradientDescent,
                                  NoiseScaleDamp, PadaDamp)

TITLE = "5. AdaDamp on a strongly convex problem"
# The problem: n examples, d features scaled from 1 down to smin (condition
# number about 1 / smin^2), noise sigma on the targets so that stochastic
# gradients stay noisy at the optimum.
FULL = dict(n=10_000, d=20, sigma=1.0, smin=0.3, wscale=0.3, eps_rel=1e-3,
            max_updates=8000, seeds=(0, 1, 2))
QUICK = dict(n=8000, d=10, sigma=1.0, smin=0.5, wscale=0.4, eps_rel=3e-3,
             max_updates=1500, seeds=(0, 1, 2, 3))
TUNE_SEED = 10  # the problem the rates are chosen on; not one of the seeds
B0 = 8
LRS = (0.003, 0.01, 0.03, 0.1, 0.3)
ADADAMP_CHEAP = "AdaDamp, approx 0.2, dwell 5"

# name -> schedule, given F*. PadaDamp's rate and GeoDamp's growth were
# picked from {1, 4, 16} and delay {1, 2} for fewest updates.
SCHEDULES = {
    "SGD": lambda f_star: Constant(B0),
    "GD": lambda f_star: GradientDescent(),
    "AdaDamp": lambda f_star: AdaDamp(initial=B0, loss_min=f_star),
    "AdaDamp, dwell 5": lambda f_star: AdaDamp(initial=B0, loss_min=f_star, dwell=5),
    ADADAMP_CHEAP: lambda f_star: AdaDamp(initial=B0, loss_min=f_star, approx=0.2,
                                          dwell=5),
    "PadaDamp": lambda f_star: PadaDamp(initial=B0, rate=4),
    "GeoDamp": lambda f_star: GeoDamp(initial=B0, factor=2, delay=1),
    "NoiseScaleDamp": lambda f_star: NoiseScaleDamp(initial=B0, scale=1.0, beta=0.9),
}


def least_squares(n, d, sigma, smin, wscale, seed):
    """Features ``X`` (float32), targets ``y`` of shape (n, 1) and ``F*``."""
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, d)) * np.logspace(0, np.log10(smin), d)).astype("float32")
    w_true = wscale * rng.standard_normal(d)
    y = (X @ w_true + sigma * rng.standard_normal(n)).astype("float32")[:, None]
    X64, y64 = X.astype("float64"), y.astype("float64")
    w_star = np.linalg.lstsq(X64, y64, rcond=None)[0]
    return X, y, float(np.mean((X64 @ w_star - y64) ** 2))


class StopAtExcessLoss(Callback):
    """Record ``F(w) - F*`` after every update; stop at ``eps``, after
    ``max_updates``, or once it is not finite."""

    def __init__(self, X, y, f_star, eps, max_updates):
        self.X, self.y = X.astype("float64"), y.astype("float64")
        self.f_star, self.eps, self.max_updates = f_star, eps, max_updates

    def excess(self, net):
        w = net.module_.weight.detach().double().numpy().T
        return float(np.mean((self.X @ w - self.y) ** 2)) - self.f_star

    def on_batch_end(self, net, training=False, **kwargs):
        if not training:
            return
        excess = self.excess(net)
        net.history.record_batch("excess", excess)
        done = sum(len(e["batches"]) for e in net.history)
        # A diverged fit (schedules that do not read the loss train on with
        # NaN, as skorch does) cannot reach eps: it stops there too.
        if excess <= self.eps or done >= self.max_updates or not math.isfinite(excess):
            raise KeyboardInterrupt  # skorch's way to end a fit early


def run_to_eps(name, lr, problem, client, max_updates=None):
    """Train one schedule at one rate; updates and examples until eps."""
    X, y, f_star = least_squares(**{k: problem[k] for k in
                                    ("n", "d", "sigma", "smin", "wscale", "seed")})
    stop = StopAtExcessLoss(X, y, f_star, 0, max_updates or problem["max_updates"])
    est = DaskRegressor(
        torch.nn.Linear, module__in_features=X.shape[1], module__out_features=1,
        module__bias=False, criterion=torch.nn.MSELoss, optimizer=torch.optim.SGD,
        lr=lr, batch_size=SCHEDULES[name](f_star), grads_per_worker=256,
        max_epochs=10_000, train_split=None, random_state=problem["seed"],
        client=client, callbacks=[("stop", stop)], verbose=0).initialize()
    torch.nn.init.zeros_(est.module_.weight)
    stop.eps = problem["eps_rel"] * stop.excess(est)  # relative to F(w_0) - F*
    with np.errstate(over="ignore", invalid="ignore"):
        try:
            est.partial_fit(X, y)
        except FloatingPointError:  # diverged at this rate
            return {"schedule": name, "lr": lr, "reached": False, "updates": math.inf,
                    "examples": math.inf, "loss_examples": math.inf}
    batches = [b for e in est.history for b in e["batches"] if "batch_size" in b]
    reached = bool(batches) and batches[-1]["excess"] <= stop.eps
    return {"schedule": name, "lr": lr, "reached": reached,
            "updates": len(batches) if reached else math.inf,
            # the gradients' rows, and the rows the schedule's loss evaluations read
            "examples": sum(b["batch_size"] for b in batches) if reached else math.inf,
            "loss_examples": (sum(b.get("loss_examples", 0) for b in batches)
                              if reached else math.inf),
            "max_batch": max(b["batch_size"] for b in batches)}


def run(quick=False, client=None, names=tuple(SCHEDULES)):
    """The table for the schedules ``names`` on every seed of the problem,
    each schedule at its best rate on the problem of ``TUNE_SEED``."""
    problem = QUICK if quick else FULL
    with (local_cluster(2) if client is None else nullcontext(client)) as client:
        lrs = {name: tuned(name, {**problem, "seed": TUNE_SEED}, client)
               for name in names}
        rows = []
        for seed in problem["seeds"]:
            for name in names:
                rows.append({"seed": seed, **run_to_eps(
                    name, lrs[name], {**problem, "seed": seed}, client)})
                print(rows[-1], flush=True)
    by = {(r["seed"], r["schedule"]): r for r in rows}
    ratios = [{"seed": seed,
               "updates_vs_gd": by[seed, "AdaDamp"]["updates"] / by[seed, "GD"]["updates"],
               "examples_vs_sgd": by[seed, "AdaDamp"]["examples"]
               / by[seed, "SGD"]["examples"],
               **{f"all_examples_vs_sgd[{name}]":
                  (by[seed, name]["examples"] + by[seed, name]["loss_examples"])
                  / by[seed, "SGD"]["examples"]
                  for name in names if name.startswith("AdaDamp")}}
              for seed in problem["seeds"]]
    return {"problem": {**problem, "B0": B0, "tune_seed": TUNE_SEED}, "rows": rows,
            "lrs": lrs, "ratios": ratios,
            **{key: float(np.median([r[key] for r in ratios])) for key in ratios[0]
               if key != "seed"}}


def tuned(name, problem, client):
    """The rate of LRS with which ``name`` reaches eps in the fewest updates."""
    best = None
    # Largest rate first; a rate that has not reached eps within the best
    # run's updates cannot win, so it stops there.
    for lr in sorted(LRS, reverse=True):
        budget = best["updates"] if best and best["reached"] else None
        r = run_to_eps(name, lr, problem, client, budget)
        print("tuning", r, flush=True)
        if best is None or (r["updates"], r["examples"]) < (best["updates"],
                                                            best["examples"]):
            best = r
    return best["lr"]


def goals(result):
    """AdaDamp against gradient descent and SGD: ``(goal, met, measured)``."""
    def all_examples(name):
        return result.get(f"all_examples_vs_sgd[{name}]", math.nan)

    return [
        ("AdaDamp: model updates to eps <= 2x gradient descent's (median of seeds "
         "not used for tuning)", result["updates_vs_gd"] <= 2,
         f"{result['updates_vs_gd']:.2f}x (strongly convex)"),
        ("AdaDamp: gradient examples to eps <= 2x constant-batch SGD's (median of "
         "seeds not used for tuning; loss evaluations not counted)",
         result["examples_vs_sgd"] <= 2,
         f"{result['examples_vs_sgd']:.2f}x; counting the loss evaluations' rows too, "
         f"{all_examples('AdaDamp'):.1f}x (strongly convex)"),
        (f"{ADADAMP_CHEAP}: gradient and loss-evaluation examples to eps <= 2x "
         "constant-batch SGD's (median of seeds not used for tuning)",
         all_examples(ADADAMP_CHEAP) <= 2,
         f"{all_examples(ADADAMP_CHEAP):.2f}x (strongly convex)")]


def markdown(result):
    p = result["problem"]
    adadamp = [name for name in result["lrs"] if name.startswith("AdaDamp")]
    lines = [f"Least squares, n={p['n']}, d={p['d']}, noise {p['sigma']}, feature scales "
             f"1..{p['smin']}; eps = {p['eps_rel']:g} (F(w_0) - F*); B0 = {p['B0']}; "
             f"plain SGD, each schedule at its best rate of {list(LRS)} (fewest "
             f"updates to eps on the problem of seed {p['tune_seed']}, chosen in this "
             f"run); seeds {list(p['seeds'])}; 2 local workers. AdaDamp is given the "
             "exact F* (`loss_min=F*`, from numpy.linalg.lstsq), which a user rarely "
             "knows; its batch follows (F(w_0) - F*) / (F(w_k) - F*). Examples: the "
             "gradients' rows; loss examples: the rows AdaDamp's evaluations of F "
             "read besides.", "",
             table(["seed", "schedule", "lr", "reached eps", "model updates", "examples",
                    "loss examples", "largest batch"],
                   [[r["seed"], r["schedule"], r["lr"], "yes" if r["reached"] else "no",
                     r["updates"], r["examples"], r["loss_examples"] or "-",
                     r.get("max_batch", "")]
                    for r in result["rows"]]), "",
             table(["seed", "AdaDamp updates / GD's", "AdaDamp examples / SGD's"]
                   + [f"{name}: examples with loss examples / SGD's" for name in adadamp],
                   [[r["seed"], f"{r['updates_vs_gd']:.2f}", f"{r['examples_vs_sgd']:.2f}"]
                    + [f"{r[f'all_examples_vs_sgd[{name}]']:.2f}" for name in adadamp]
                    for r in result["ratios"]]), "",
             f"Median over seeds: {result['updates_vs_gd']:.2f}x the model updates of "
             f"gradient descent, {result['examples_vs_sgd']:.2f}x the gradient examples "
             "of constant-batch SGD."]
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.modules[__name__])
