"""What every batch-size schedule is: :class:`BaseDamper`, and what it
reads (:class:`Progress`, :class:`UpdateStats`). Public as
:mod:`dask_adadamp.dampers`' names."""
import math
from collections.abc import Callable, Sequence
from typing import ClassVar, NamedTuple

from sklearn.base import BaseEstimator

from ._validation import check_fields


class Progress(NamedTuple):
    """What a schedule may read before an update.

    Parameters
    ----------
    updates : int
        Model updates done so far in the fit (``k``).
    epochs : int
        Epochs done so far (``e``).
    n_train : int
        Examples in the training set.
    loss : callable or None (default=None)
        ``loss(fraction=None)`` gives the mean training loss (on the cluster:
        the training shards, forward only), on a fixed random ``fraction``
        of the training set or on all of it. The estimator evaluates it in
        the calls of the previous update, at that update's weights (one
        update old); only where no update carried it (the fit's first ask)
        is it a round of calls of its own, at the current weights.

    Examples
    --------
    >>> from dask_adadamp.dampers import AdaDamp
    >>> progress = Progress(updates=10, epochs=1, n_train=1000,
    ...                     loss=lambda fraction=None: 0.5)
    >>> AdaDamp(initial=16).batch_size(progress._replace(updates=0))
    16.0
    """

    updates: int
    epochs: int
    n_train: int
    loss: Callable[..., float] | None = None


class UpdateStats(NamedTuple):
    """What one update measured, reported to the schedule after it.

    Parameters
    ----------
    batch_size : int
        Examples in the update.
    loss : float
        The update's mean training loss.
    sq_norm : float
        Squared norm of the update's mean gradient.
    chunk_sizes : sequence of int
        ``chunk_sizes[j]`` examples went into chunk ``j`` (computed by the
        worker that holds its shard, in the update's call to it).
    chunk_sq_norms : sequence of float or None
        Squared norm of each chunk's mean gradient (None unless the
        schedule sets ``chunk_norms``).

    Examples
    --------
    >>> from dask_adadamp.dampers import RadaDamp
    >>> damper = RadaDamp(initial=16)
    >>> damper.observe(UpdateStats(batch_size=16, loss=2.0, sq_norm=1.0,
    ...                            chunk_sizes=[16], chunk_sq_norms=None))
    >>> damper.signal_
    1.0
    """

    batch_size: int
    loss: float
    sq_norm: float
    chunk_sizes: Sequence[int]
    chunk_sq_norms: Sequence[float]


class BaseDamper(BaseEstimator):
    """A batch-size schedule. Subclasses implement :meth:`batch_size`.

    Subclasses take their parameters as keyword arguments and store them
    under the same names (scikit-learn's convention, so that ``clone`` and
    ``batch_size__<name>`` work); what they learn during a fit goes in
    attributes ending in ``_``.

    Attributes
    ----------
    signal_name : str or None
        History key under which the schedule's own signal (``signal_``)
        is recorded after every update.
    min_chunks : int
        Fewest chunks an update must be split into (2 for schedules that
        compare chunks with each other).
    chunk_norms : bool
        Whether :meth:`observe` reads ``UpdateStats.chunk_sq_norms`` (the
        workers compute them only then).
    needs_loss : bool
        Whether :meth:`batch_size` calls ``progress.loss``: the fit then
        evaluates the loss in the calls of the update before each ask that
        is :meth:`due` (on ``approx`` of the rows, if the schedule has it).

    Examples
    --------
    A schedule that doubles the batch every 100 updates:

    >>> class Doubling(BaseDamper):
    ...     def __init__(self, initial=32):
    ...         self.initial = initial
    ...     def batch_size(self, progress):
    ...         return self.initial * 2 ** (progress.updates // 100)
    >>> Doubling(initial=8).ask(Progress(updates=250, epochs=0, n_train=1000))
    32
    """

    signal_name = None
    min_chunks = 1
    chunk_norms = False
    needs_loss = False

    def batch_size(self, progress):
        """The batch size the formula gives now (a number >= 1, or inf)."""
        raise NotImplementedError

    def lr_factor(self, progress):
        """Multiplier of the learning rate for the next update."""
        return 1.0

    def observe(self, stats):
        """Take note of an update's :class:`UpdateStats` (default: ignore)."""

    @property
    def needs_finite(self):
        """Whether the schedule reads the training loss or gradient
        (``needs_loss``, or an :meth:`observe` of its own). A fit with such a
        schedule stops when they are not finite; with any other it trains
        on, as skorch does.

        >>> from dask_adadamp.dampers import AdaDamp, PadaDamp, RadaDamp
        >>> AdaDamp().needs_finite, RadaDamp().needs_finite, PadaDamp().needs_finite
        (True, True, False)
        """
        return self.needs_loss or type(self).observe is not BaseDamper.observe

    def reset(self):
        """Forget what was learned: the start of a new fit."""
        for name in list(vars(self)):
            if name.endswith("_") and not name.startswith("_"):
                delattr(self, name)

    def ask(self, progress):
        """The next update's batch size, an int >= 1, held for ``dwell``
        updates between two evaluations of :meth:`batch_size`."""
        if self.due(progress.updates):
            size = self.batch_size(progress)
            # inf (a loss at its minimum) and huge values become a finite
            # int; the estimator caps it at the data or max_batch_size.
            self.requested_ = math.ceil(min(max(size, 1), 2**62))
            self.asked_at_ = progress.updates
        return self.requested_

    def due(self, updates):
        """Whether :meth:`ask` with ``updates`` model updates done evaluates
        :meth:`batch_size` (rather than holding the size for ``dwell``).

        >>> from dask_adadamp.dampers import AdaDamp
        >>> damper = AdaDamp(dwell=3)
        >>> damper.asked_at_ = 6
        >>> [damper.due(k) for k in (7, 8, 9)]
        [False, False, True]
        """
        asked_at = getattr(self, "asked_at_", None)
        return asked_at is None or updates - asked_at >= getattr(self, "dwell", 1)

    def check(self):
        """Raise ValueError, naming the parameter, if one is out of range."""
        check_fields(self, self._checks)

    _checks: ClassVar[dict] = {}

    def state_dict(self):
        """What this schedule learned during the fit (plain Python values)."""
        return {name: value for name, value in vars(self).items()
                if name.endswith("_") and not name.startswith("_")}

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned."""
        self.reset()
        vars(self).update(state)
