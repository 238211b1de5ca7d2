"""Batch-size schedules ("dampers"): how many examples the next update uses.

Each schedule is a small class with one formula, in the style of
``torch.optim.lr_scheduler``. A fit asks it for the next batch size before
every update and tells it what the update measured afterwards; the
schedule knows nothing of Dask. Pass one as ``batch_size``::

    DaskClassifier(..., batch_size=GeoDamp(initial=128, factor=5, delay=60))
    DaskClassifier(..., batch_size=GeoDamp, batch_size__initial=128)
    DaskClassifier(..., batch_size=256)               # Constant(256)

Notation: ``k`` = model updates so far, ``e`` = epochs so far, ``B0`` =
``initial``. Schedules are scikit-learn estimators as far as parameters go
(``get_params``, ``set_params``, ``clone``), so ``batch_size__factor`` can
be grid-searched. What a schedule learns during a fit lives in attributes
ending in ``_`` and travels with ``state_dict()`` / ``load_state_dict()``
(``net.save_params(f_damper=...)``, or skorch's ``Checkpoint(f_damper=...)``).

The estimator adds two things around every schedule:

- ``dwell``: adaptive schedules are asked again only every ``dwell`` updates
  (their evaluations can be expensive); in between the batch size is held.
- ``max_batch_size``: when a schedule asks for ``B > max_batch_size``, the
  update uses ``max_batch_size`` examples and the learning rate
  ``lr * max_batch_size / B`` (Algorithm 1 of AdaDamp).

Examples
--------
>>> from dask_adadamp.dampers import GeoDamp, Progress
>>> damper = GeoDamp(initial=32, factor=2, delay=3)
>>> [damper.batch_size(Progress(updates=0, epochs=e, n_train=1000))
...  for e in range(7)]
[32, 32, 32, 64, 64, 64, 128]
"""
import math
from typing import ClassVar

# The schedules' base class and what they read, public here.
from ._damper_base import BaseDamper, Progress, UpdateStats

__all__ = ["AdaDamp", "BaseDamper", "Constant", "DAMPERS", "GeoDamp", "GeoDampLR",
           "GradientDescent", "NoiseScaleDamp", "PadaDamp", "Progress", "RadaDamp",
           "UpdateStats"]


class Constant(BaseDamper):
    """A constant batch size: plain mini-batch SGD.

    .. math:: B_k = B_0

    An int ``batch_size`` of the estimators is this schedule.

    Parameters
    ----------
    initial : int (default=128)
        ``B0``, the batch size of every update.

    Examples
    --------
    >>> Constant(64).batch_size(Progress(updates=10, epochs=3, n_train=1000))
    64

    As an estimator's schedule (the same as ``batch_size=64``)::

        DaskClassifier(MyNet, batch_size=Constant(64))
    """

    _checks: ClassVar[dict] = {"initial": "a positive integer"}

    def __init__(self, initial=128):
        self.initial = initial

    def batch_size(self, progress):
        return self.initial


class GradientDescent(BaseDamper):
    """The whole training set every update: full-batch gradient descent.

    .. math:: B_k = n

    The estimators' ``batch_size=-1`` (skorch's spelling) is this schedule.
    It takes no parameters.

    Examples
    --------
    >>> GradientDescent().batch_size(Progress(updates=0, epochs=0, n_train=1000))
    1000
    """

    def batch_size(self, progress):
        return progress.n_train


class PadaDamp(BaseDamper):
    """Passive AdaDamp: the batch grows linearly in model updates.

    .. math:: B_k = \\lceil B_0 + \\mathrm{rate} \\cdot k \\rceil

    with ``k`` the model updates so far. No loss is evaluated: the
    linear growth stands in for AdaDamp's ``1 / (F(w_k) - F*)``, which grows
    about linearly for smooth convex losses.

    Parameters
    ----------
    initial : int (default=32)
        ``B0``, the first update's batch size.
    rate : float (default=1.0)
        Examples added per model update (>= 0).

    Examples
    --------
    >>> damper = PadaDamp(initial=16, rate=0.5)
    >>> damper.batch_size(Progress(updates=10, epochs=0, n_train=1000))
    21.0
    >>> damper.ask(Progress(updates=11, epochs=0, n_train=1000))  # an int
    22
    """

    _checks: ClassVar[dict] = {
        "initial": "a positive integer", "rate": "a number >= 0"}

    def __init__(self, initial=32, rate=1.0):
        self.initial = initial
        self.rate = rate

    def batch_size(self, progress):
        return self.initial + self.rate * progress.updates


class GeoDamp(BaseDamper):
    """The batch grows geometrically in epochs.

    .. math:: B = B_0 \\cdot \\mathrm{factor}^{\\lfloor e / \\mathrm{delay} \\rfloor}

    with ``e`` the epochs done: the batch is multiplied by ``factor`` every
    ``delay`` epochs, as step decay divides the learning rate
    (:class:`GeoDampLR`, its baseline).

    Parameters
    ----------
    initial : int (default=32)
        ``B0``, the batch size of the first ``delay`` epochs.
    factor : float (default=2)
        Growth every ``delay`` epochs (>= 1).
    delay : int (default=10)
        Epochs between two growths.

    Examples
    --------
    >>> damper = GeoDamp(initial=32, factor=2, delay=3)
    >>> [damper.batch_size(Progress(updates=0, epochs=e, n_train=1000))
    ...  for e in range(7)]
    [32, 32, 32, 64, 64, 64, 128]

    As an estimator's schedule, its parameters routed as skorch routes a
    module's (and grid-searchable)::

        DaskClassifier(MyNet, batch_size=GeoDamp, batch_size__factor=4)
    """

    _checks: ClassVar[dict] = {
        "initial": "a positive integer", "factor": "a number >= 1",
        "delay": "a positive integer"}

    def __init__(self, initial=32, factor=2, delay=10):
        self.initial = initial
        self.factor = factor
        self.delay = delay

    def batch_size(self, progress):
        return self.initial * self.factor ** (progress.epochs // self.delay)


class GeoDampLR(BaseDamper):
    """A constant batch and a learning rate decayed in steps.

    .. math:: B = B_0, \\qquad
              \\mathrm{lr}' = \\mathrm{lr} / \\mathrm{factor}^{\\lfloor e / \\mathrm{delay} \\rfloor}

    Step decay, the classic baseline for :class:`GeoDamp`: dividing the
    learning rate by ``factor`` acts much like multiplying the batch by it
    (Smith et al. 2018, "Don't decay the learning rate, increase the batch
    size"), but the number of updates per epoch stays the same.

    Parameters
    ----------
    initial : int (default=32)
        ``B0``, the batch size of every update.
    factor : float (default=2)
        Division of the learning rate every ``delay`` epochs (>= 1).
    delay : int (default=10)
        Epochs between two decays.

    Examples
    --------
    >>> damper = GeoDampLR(initial=32, factor=10, delay=5)
    >>> damper.lr_factor(Progress(updates=0, epochs=12, n_train=1000))
    0.01
    >>> damper.batch_size(Progress(updates=0, epochs=12, n_train=1000))
    32
    """

    _checks: ClassVar[dict] = {
        "initial": "a positive integer", "factor": "a number >= 1",
        "delay": "a positive integer"}

    def __init__(self, initial=32, factor=2, delay=10):
        self.initial = initial
        self.factor = factor
        self.delay = delay

    def batch_size(self, progress):
        return self.initial

    def lr_factor(self, progress):
        return 1.0 / self.factor ** (progress.epochs // self.delay)


class AdaDamp(BaseDamper):
    """The batch grows as the training loss falls (the AdaDamp rule).

    .. math:: B_k = \\left\\lceil B_0 \\, \\frac{F(w_0) - F^*}{F(w_k) - F^*} \\right\\rceil

    ``F`` is the mean training loss (forward passes over the training
    shards, the module in eval mode), ``F* = loss_min``. It is evaluated in
    the same calls as the gradient of the update before every ``dwell``-th
    ask, at that update's weights: ``B_k`` is set by ``F(w_{k-1})``, one
    update old, which spares a round of calls per update (only ``F(w_0)``
    needs a round of its own). The signal recorded is the loss ratio
    ``(F(w_0) - F*) / (F(w_{k-1}) - F*)``.

    Parameters
    ----------
    initial : int (default=32)
        ``B0``, the first update's batch size.
    loss_min : float (default=0.0)
        ``F*``, the least training loss reachable (0 for most losses).
    approx : float in (0, 1] or None (default=None)
        Evaluate ``F`` on this fraction of the training set (the same
        random rows each time), or on all of it.
    dwell : int (default=1)
        Evaluate ``F`` every ``dwell`` updates and hold the batch size in
        between.

    Examples
    --------
    A loss that has fallen from 2.0 to 0.5 quadruples the batch:

    >>> damper = AdaDamp(initial=16)
    >>> losses = iter([2.0, 0.5])
    >>> progress = Progress(0, 0, 1000, loss=lambda fraction=None: next(losses))
    >>> damper.ask(progress), damper.ask(progress._replace(updates=1))
    (16, 64)
    >>> damper.signal_
    4.0
    """

    signal_name = "loss_ratio"
    needs_loss = True
    _checks: ClassVar[dict] = {
        "initial": "a positive integer", "loss_min": "a finite number",
        "approx": "None or a number in (0, 1]", "dwell": "a positive integer"}

    def __init__(self, initial=32, loss_min=0.0, approx=None, dwell=1):
        self.initial = initial
        self.loss_min = loss_min
        self.approx = approx
        self.dwell = dwell

    def batch_size(self, progress):
        loss = progress.loss(self.approx)
        if getattr(self, "loss0_", None) is None:
            self.loss0_ = loss
        excess = loss - self.loss_min
        self.signal_ = ((self.loss0_ - self.loss_min) / excess if excess > 0
                        else math.inf)
        return self.initial * self.signal_


class RadaDamp(BaseDamper):
    """AdaDamp driven by what every update measures anyway.

    .. math:: B_k = \\lceil B_0 \\max(1, R_0 / R_k) \\rceil

    with ``R_k`` a bias-corrected moving average (weight ``rho`` on the
    past) of ``fudge * batch loss + |batch gradient|^2``, and ``R_0`` the
    first update's value. No extra evaluation on the cluster; the signal
    recorded is ``R_0 / R_k``.

    Parameters
    ----------
    initial : int (default=32)
        ``B0``, also the floor.
    rho : float in [0, 1) (default=0.9)
        Weight of the past in the moving average.
    fudge : float (default=0.01)
        Weight of the batch loss beside the squared gradient norm (>= 0).
    dwell : int (default=1)
        Updates between two changes of the batch size.

    Examples
    --------
    Once the measured value has fallen to a quarter of the first, the
    batch is about four times ``B0``:

    >>> damper = RadaDamp(initial=16, rho=0.0, fudge=0.0)
    >>> for sq_norm in (1.0, 0.25):
    ...     damper.observe(UpdateStats(16, 1.0, sq_norm, [16], None))
    >>> damper.batch_size(Progress(updates=2, epochs=0, n_train=1000))
    64.0
    """

    signal_name = "loss_ratio"
    _checks: ClassVar[dict] = {
        "initial": "a positive integer", "rho": "a number in [0, 1)",
        "fudge": "a number >= 0", "dwell": "a positive integer"}

    def __init__(self, initial=32, rho=0.9, fudge=0.01, dwell=1):
        self.initial = initial
        self.rho = rho
        self.fudge = fudge
        self.dwell = dwell

    def observe(self, stats):
        value = self.fudge * stats.loss + stats.sq_norm
        if getattr(self, "first_", None) is None:
            self.first_ = value
        self.avg_ = _ema(getattr(self, "avg_", 0.0), value, self.rho)
        self.seen_ = getattr(self, "seen_", 0) + 1
        current = self.avg_ / (1 - self.rho ** self.seen_)
        self.signal_ = self.first_ / current if current > 0 else math.inf

    def batch_size(self, progress):
        return self.initial * max(1.0, getattr(self, "signal_", 1.0))


class NoiseScaleDamp(BaseDamper):
    """The batch size follows the gradient noise scale.

    ``B_k = max(B0, ceil(scale * B_noise))`` with ``B_noise = tr(S) / |G|^2``
    (McCandlish et al. 2018, "An empirical model of large-batch training"):
    ``tr(S)`` the trace of the per-example gradients' covariance and ``G``
    the true gradient. Both are estimated from every update's own chunks,
    in the same calls (no extra round). With ``n`` chunks, chunk ``j`` of
    ``b_j`` examples with mean gradient ``g_j``, the update's mean gradient
    ``g_B`` over ``B = sum b_j`` examples, and
    ``A = sum_j (b_j / B) |g_j|^2 - |g_B|^2``, the unbiased estimates are::

        tr(S) ~ B * A / (n - 1)          |G|^2 ~ |g_B|^2 - A / (n - 1)

    (as ``E |g_j|^2 = |G|^2 + tr(S) / b_j``). Each is smoothed by a
    bias-corrected moving average (weight ``beta`` on the past, as in
    AdaScale and AdaptDL) before the ratio is taken. While the smoothed
    ``|G|^2`` is not positive (noise swamps the gradient, typical of the
    first updates), the estimate says nothing and the batch size is held.

    ``scale`` sets the trade-off. In McCandlish et al.'s model, training
    at batch size ``B`` takes ``1 + B / B_noise`` times the fewest epochs
    and ``1 + B_noise / B`` times the fewest updates: the default 0.2
    costs about 1.2x the epochs for about 6x the fewest updates.

    Every update is split into at least two chunks (``min_chunks = 2``),
    also when it fits in one. An update of a single example gives no
    estimate; the previous one is kept. The signal recorded is the
    smoothed ``B_noise``.

    Parameters
    ----------
    initial : int (default=32)
        ``B0``, also the floor.
    scale : float (default=0.2)
        Fraction of the noise scale to use as the batch size.
    beta : float in [0, 1) (default=0.99)
        Smoothing of the two estimates.
    dwell : int (default=1)
        Updates between two changes of the batch size.

    Examples
    --------
    Two chunks of 32 whose mean gradients are longer than the update's:
    their spread estimates the noise, here a noise scale of 78 examples.

    >>> damper = NoiseScaleDamp(initial=16, scale=1.0, beta=0.0)
    >>> damper.observe(UpdateStats(batch_size=64, loss=1.0, sq_norm=1.0,
    ...                            chunk_sizes=[32, 32], chunk_sq_norms=[1.5, 1.6]))
    >>> round(damper.signal_, 1)  # B_noise, examples
    78.2
    >>> damper.ask(Progress(updates=1, epochs=0, n_train=1000))
    79
    """

    signal_name = "noise_scale"
    min_chunks = 2
    chunk_norms = True
    _checks: ClassVar[dict] = {
        "initial": "a positive integer", "scale": "a positive number",
        "beta": "a number in [0, 1)", "dwell": "a positive integer"}

    def __init__(self, initial=32, scale=0.2, beta=0.99, dwell=1):
        self.initial = initial
        self.scale = scale
        self.beta = beta
        self.dwell = dwell

    def observe(self, stats):
        n = len(stats.chunk_sizes)
        if n < 2:
            return
        total = sum(stats.chunk_sizes)
        spread = sum(b / total * s for b, s in
                     zip(stats.chunk_sizes, stats.chunk_sq_norms)) - stats.sq_norm
        trace = total * spread / (n - 1)
        grad_sq = stats.sq_norm - spread / (n - 1)
        self.trace_avg_ = _ema(getattr(self, "trace_avg_", 0.0), trace, self.beta)
        self.grad_sq_avg_ = _ema(getattr(self, "grad_sq_avg_", 0.0), grad_sq, self.beta)
        self.seen_ = getattr(self, "seen_", 0) + 1
        # The same bias correction divides both averages: it cancels.
        self.signal_ = (self.trace_avg_ / self.grad_sq_avg_
                        if self.grad_sq_avg_ > 0 else math.inf)

    def batch_size(self, progress):
        noise_scale = getattr(self, "signal_", math.inf)
        if noise_scale == math.inf:  # no estimate yet: hold the batch size
            return getattr(self, "requested_", self.initial)
        return max(self.initial, self.scale * noise_scale)


def _ema(average, value, weight):
    return weight * average + (1 - weight) * value


#: Schedules by name, for command lines and configuration files.
DAMPERS = {cls.__name__: cls for cls in (
    Constant, GradientDescent, PadaDamp, GeoDamp, GeoDampLR, AdaDamp,
    RadaDamp, NoiseScaleDamp)}
