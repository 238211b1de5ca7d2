"""One ``fit_loop`` call's state on the client: the schedule's asks, each
update's gradient from the cluster, and what the update measured.

A :class:`Fit` lives from the placement of the training data to its
release; the estimator holds it as ``_fit`` only meanwhile, so nothing of
one fit survives into the next (or into a pickle). Its records feed the
default callbacks of :mod:`dask_adadamp.callbacks` (``UpdateLog`` writes
them to the history, ``DashboardFeed`` to the dashboard page).
"""
import math
import time

import numpy as np
import torch

from . import _netcopy as netcopy
from ._history import total, update_rows
from ._sampling import EpochSampler
from .dampers import DAMPERS, Progress, UpdateStats
from .exceptions import LossReductionError, NonFiniteLossError


class Fit:
    """The state of one fit of ``net`` on a placed :class:`~._engine.FitSession`.

    Parameters
    ----------
    net : DaskNetMixin
        The estimator; its history, schedule (``damper_``) and seed are read
        and written.
    session : dask_adadamp._engine.FitSession
        The fit's data on the cluster.
    train_data : tuple
        The client's ``(X_train, y_train)``, sliced only for
        ``BatchScoring(on_train=True)``.
    monitor : dask_adadamp.dashboard.FitMonitor or None
        Where the dashboard feed sends the records; None without one.
    """

    def __init__(self, net, session, train_data, monitor=None):
        self.net, self.session, self.monitor = net, session, monitor
        self.train_data = train_data
        self.evaluation = (None, -1)  # (update, evaluations of it - 1)
        self.lr_scale = 1.0
        self.stats = self.timing = self.record = None
        self.tick, self.epoch_rows = time.perf_counter(), 0
        # The resource bill: worker-seconds are counted from here, over the
        # whole fit (validation and callbacks hold the workers too).
        self.held_tick = self.tick
        self.scaler = None

    # --- the updates of an epoch --------------------------------------------

    def begin_epoch(self):
        self.tick, self.epoch_rows = time.perf_counter(), 0

    def update_number(self):
        """The current update's number, 1-based, counted over the fits of
        this estimator (skorch has opened its batch record)."""
        return total(self.net.history, "model_updates") + len(self.net.history[-1, "batches"])

    def updates(self, scaler=None):
        """Yield this epoch's updates, asking the schedule for each size
        (and the cluster for the workers that size needs)."""
        net = self.net
        epoch = len(net.history) - 1
        rng = np.random.default_rng([net.seed_, 2, epoch])
        sampler = EpochSampler(self.session.shard_ids, net.grads_per_worker, rng)
        self.scaler = scaler
        while sampler.remaining:
            size = self.batch_size()
            if scaler is not None:
                # Ahead of need: the scaler replays the schedule from here,
                # and learns the updates' cost from the previous record.
                record = self.record
                spu = (record["batch_size"] / record["examples_per_s"]
                       if record else None)
                scaler.request(size, updates=self.update_number(), epochs=epoch,
                               rows_left=sampler.remaining, seconds_per_update=spu,
                               measured=record)
                # Spread the shards over workers that arrived (or are gone);
                # the update does not wait for workers still starting.
                workers = scaler.arrivals()
                if workers is not None:
                    self.session.follow(workers)
            yield sampler.take(size, min_chunks=net.damper_.min_chunks)

    def batch_size(self):
        """Batch size of the next update; sets the learning-rate factor
        ``lr_scale`` that goes with it."""
        net, session = self.net, self.session
        updates = self.update_number()
        progress = Progress(
            updates=updates, epochs=len(net.history) - 1, n_train=session.n_rows,
            loss=lambda fraction=None: self.mean_loss(updates, fraction))
        asked = net.damper_.ask(progress)
        scale = net.damper_.lr_factor(progress)
        size = min(asked, session.n_rows)
        if net.max_batch_size is not None and asked > net.max_batch_size:
            size = net.max_batch_size
            scale *= net.max_batch_size / asked
        self.lr_scale = scale
        return size

    def mean_loss(self, updates, fraction=None):
        """Training loss for the schedule: the one evaluated in the previous
        update's calls (at its weights), or else, at the fit's first ask, a
        round of calls at the current weights."""
        ridden = self.session.ridden_loss
        if ridden is not None and ridden[:2] == (updates, fraction):
            loss = ridden[2]
        else:
            weights, buffers = netcopy.flat_weights(self.net)
            loss = self.session.mean_loss(weights, buffers, self.loss_rows(fraction))
        if not math.isfinite(loss):
            raise self.non_finite("the training loss the schedule reads", loss,
                                  updates + 1)
        return loss

    def non_finite(self, what, loss, update_number):
        """The error that stops a fit whose schedule needs a finite loss."""
        free = [name for name, cls in DAMPERS.items() if not cls().needs_finite]
        return NonFiniteLossError(
            f"{what} is not finite (loss {loss}) at model update "
            f"{update_number} (epoch {len(self.net.history)}), and the batch-size "
            f"schedule {self.net.damper_!r} reads the loss or gradient, so the fit "
            "stops (skorch would train on); the estimator keeps the weights "
            "from before that update. A smaller lr may help, or a schedule "
            f"that does not read them ({', '.join(free)}), which trains on "
            "as skorch does.")

    def loss_rows(self, fraction):
        """The rows of each shard the schedule's loss is evaluated on: all,
        or the same random ``fraction`` of every shard each time."""
        if fraction is None:
            return self.session.all_rows()
        rng = np.random.default_rng([self.net.seed_, 3])
        return [np.sort(rng.choice(len(ids), max(1, round(fraction * len(ids))),
                                   replace=False))
                for ids in self.session.shard_ids]

    # --- one update -----------------------------------------------------------

    def gradient(self, batch):
        """Add the update's gradient, computed on the cluster, to every
        learnable parameter's ``.grad`` (as ``loss.backward()`` adds; after
        skorch's ``zero_grad`` it is the gradient); the step's ``{"loss",
        "y_pred"}``."""
        net, session, damper = self.net, self.session, self.net.damper_
        update_number = self.update_number()
        if session.spec.mean is None and len(batch.chunks) > 1:
            raise LossReductionError(
                f"{type(net).__name__}.get_loss cannot be computed in chunks "
                f"exactly, and model update {update_number} (epoch "
                f"{len(net.history)}) has {len(batch.chunks)} chunks of at most "
                f"grads_per_worker={net.grads_per_worker} rows ({len(batch)} "
                "rows); only an update of one chunk is exact with such a loss. "
                f"{session.spec.why}. The workers add up the chunks' losses, "
                "which is exact for a mean over the batch's rows (plus terms "
                "added once per batch, such as a penalty on the weights) and "
                "for a sum over them. The estimator keeps the weights from "
                "before this update.")
        weights, buffers = netcopy.flat_weights(net)
        # The schedule's next ask needs the loss: evaluate it in this
        # update's calls, at these weights, rather than in a round of its own.
        fraction = getattr(damper, "approx", None)
        loss_rows = (self.loss_rows(fraction)
                     if damper.needs_loss and damper.due(update_number) else None)
        # An optimizer that evaluates one update more than once (LBFGS) gets
        # new dropout masks each time, as in skorch; the first evaluation
        # keeps the seed (seed, update), so one update stays a function of it.
        last, k = self.evaluation
        k = k + 1 if last == update_number else 0
        self.evaluation = (update_number, k)
        seed = (net.seed_, update_number) + ((k,) if k else ())
        sums = session.gradient(weights, buffers, batch, seed=seed,
                                loss_rows=loss_rows, sq_norms=damper.chunk_norms)
        if loss_rows is not None:
            session.ridden_loss = (update_number, fraction, sums.mean_loss)
        grad, count = sums.grad, sums.count
        loss = sums.loss / count
        # skorch trains on with a non-finite loss; a schedule that reads it
        # cannot, so it stops before the step spoils the weights.
        if damper.needs_finite and not (np.isfinite(loss) and np.isfinite(grad).all()):
            what = "loss" if not np.isfinite(loss) else "gradient"
            raise self.non_finite(f"the training {what}", loss, update_number)
        netcopy.set_buffers(net, sums.buffers)
        mean = grad / count
        # skorch's gradient: of the batch's mean, or of its sum where the
        # criterion sums (the schedules read the mean either way).
        netcopy.add_gradients(net, mean if session.spec.mean else grad)
        self.timing = sums.timing
        self.stats = UpdateStats(
            batch_size=count, loss=float(loss),
            sq_norm=float(mean.astype(np.float64) @ mean.astype(np.float64)),
            chunk_sizes=sums.chunk_sizes, chunk_sq_norms=sums.chunk_sq_norms)
        return {"loss": torch.tensor(loss if session.spec.mean else sums.loss),
                "y_pred": None}

    def end_update(self, batch, lr):
        """After the optimizer's step at ``lr``: tell the schedule what the
        update measured, and keep the update's ``record`` for the callbacks.

        The history gets the update's ``batch_size`` (and ``loss_examples``,
        which the epoch's totals add up) here, whatever the callbacks.
        """
        net, session, damper = self.net, self.session, self.net.damper_
        damper.observe(self.stats)
        net.history.record_batch("batch_size", len(batch))
        if damper.needs_loss:
            # The rows the schedule's loss evaluations read since the previous
            # update: the examples it costs beside the gradient's.
            net.history.record_batch("loss_examples", session.loss_examples)
            session.loss_examples = 0
        record = {"batch_size": len(batch), "n_workers": session.workers_used(batch),
                  "lr": lr, **call_times(self.timing), **self.bill(batch)}
        name = damper.signal_name
        if name is not None and getattr(damper, "signal_", None) is not None:
            record[name] = float(damper.signal_)
        now = time.perf_counter()
        # The wall-clock time since the previous update ended: sampling, the
        # schedule's loss evaluations and the optimizer step all count.
        record["examples_per_s"] = len(batch) / max(now - self.tick, 1e-9)
        self.tick = now
        self.epoch_rows += len(batch)
        self.record = record

    def bill(self, batch):
        """What the update held of the cluster: ``workers_present`` (the
        scheduler's workers), ``workers_wanted`` (what its batch needs:
        ``ceil(B / grads_per_worker)``, within the worker bounds and the
        shards there are), ``workers_asked`` (what the scaler asked the
        cluster for, ahead of need; None without one), ``short`` (fewer
        workers used than wanted), ``worker_s`` (workers present x seconds
        since the previous update ended), ``scale_lags_s`` (request to
        arrival of the scale-ups completed meanwhile) and ``workers_lost``
        (workers that died or stalled during the update)."""
        net, session = self.net, self.session
        now = time.perf_counter()
        present = len(session.members.live) if session.members is not None else None
        # Without a scaler there are no worker bounds to clip to.
        state = self.scaler.state() if self.scaler is not None else {}
        wanted = min(state.get("workers_wanted")
                     or math.ceil(len(batch) / net.grads_per_worker),
                     len(session.shard_ids))
        used = session.workers_used(batch)
        held = (present or used) * (now - self.held_tick)
        self.held_tick = now
        return {"workers_present": present, "workers_wanted": wanted,
                "workers_asked": state.get("workers_asked"), "short": used < wanted,
                "worker_s": round(held, 6), "scale_lags_s": state.get("scale_lags_s", []),
                "workers_lost": self.timing["lost"] + self.timing["stalled"]}

    def end_epoch(self):
        """The epoch's totals, which the next updates are numbered from:
        cumulative ``model_updates``, ``n_examples`` (and ``loss_examples``)."""
        history, damper = self.net.history, self.net.damper_
        batches = update_rows([history[-1]])
        history.record("model_updates", total(history, "model_updates") + len(batches))
        history.record("n_examples", total(history, "n_examples")
                       + sum(b["batch_size"] for b in batches))
        if damper.needs_loss:
            history.record("loss_examples", total(history, "loss_examples")
                           + sum(b.get("loss_examples", 0) for b in batches))


def call_times(timing):
    """What an update's calls cost, for its history row (milliseconds).

    ``compute_ms``: the slowest worker's compute; ``comm_ms``: the rest of
    the calls' wall-clock time (sending weights, receiving sums, waiting);
    ``workers_ms``: each worker's ``[round trip, compute]``; ``rounds``:
    rounds of calls (more than 1 after a worker was lost mid-update);
    ``tree``: whether a round went through a tree of workers (the client
    calls one, the rest is passed on); ``bytes_out``, ``bytes_in``: weights
    the client sent, gradients it received.

    >>> call_times({"wall_s": 0.010, "rounds": 1, "bytes_out": 8, "bytes_in": 8,
    ...             "workers": {"tcp://a:1": (0.009, 0.006)}})["comm_ms"]
    4.0
    """
    per_worker = {addr: [round(1e3 * rtt, 3), round(1e3 * compute, 3)]
                  for addr, (rtt, compute) in sorted(timing["workers"].items())}
    compute = max((c for _, c in per_worker.values()), default=0.0)
    return {"compute_ms": compute,
            "comm_ms": round(max(1e3 * timing["wall_s"] - compute, 0.0), 3),
            "rounds": timing["rounds"], "tree": timing.get("tree", False),
            "bytes_out": timing.get("bytes_out"),
            "bytes_in": timing.get("bytes_in"), "workers_ms": per_worker}
