"""dask-adadamp's exceptions and warnings.

As in skorch's ``skorch.exceptions``, every error and warning the library
raises on purpose has a class here, so that you can catch or filter it by
name. Each also derives from the built-in class it was before (an error of a
fit that lost its workers is still a ``TimeoutError``), so existing
``except`` clauses keep working.

Examples
--------
Train without the dashboard page, quietly, where the scheduler cannot
import dask_adadamp:

>>> import warnings
>>> from dask_adadamp.exceptions import DashboardOffWarning
>>> warnings.filterwarnings("ignore", category=DashboardOffWarning)
>>> warnings.resetwarnings()
"""

__all__ = ["DaskAdaDampError", "DaskAdaDampWarning", "NoWorkersError",
           "NonFiniteLossError", "DataLostError", "ClientClosedError",
           "CustomizationError", "LossReductionError",
           "DashboardOffWarning", "NoClusterManagerWarning", "ScoringCacheWarning"]


class DaskAdaDampError(Exception):
    """Base class of the errors dask-adadamp raises on purpose."""


class DaskAdaDampWarning(UserWarning):
    """Base class of dask-adadamp's warnings."""


class NoWorkersError(DaskAdaDampError, TimeoutError):
    """The fit lost every worker and none came back in time."""


class NonFiniteLossError(DaskAdaDampError, FloatingPointError):
    """The loss became NaN or infinite while the batch-size schedule reads it.

    Schedules that do not read the loss train on, as skorch does.
    """


class DataLostError(DaskAdaDampError, RuntimeError):
    """Blocks of a dask array's training data were lost with their workers
    and could not be recomputed."""


class ClientClosedError(DaskAdaDampError, RuntimeError):
    """The Dask client was closed during the fit; the estimator keeps the
    weights of its last complete update."""


class CustomizationError(DaskAdaDampError, RuntimeError):
    """A customisation of the net needs what is on the other side of the
    split between the client and the workers.

    ``infer`` and ``get_loss`` run on the workers, on each chunk of an
    update's rows, where the net has no ``history``, callbacks, optimizer or
    client; ``train_step`` and ``train_step_single`` run on the client,
    where the update's rows are not (its batch holds their numbers, not
    ``(X, y)`` tensors). The message names what was needed and the way
    around it.
    """


class LossReductionError(DaskAdaDampError, ValueError):
    """An update has more than one chunk, and the net's training loss cannot
    be computed in chunks exactly as skorch computes it on the whole batch:
    it is neither a mean over the batch's rows (plus terms added once per
    batch) nor a sum over them. The estimator keeps the weights from before
    that update."""


class DashboardOffWarning(DaskAdaDampWarning, RuntimeWarning):
    """The /adadamp dashboard page is off for this client (the scheduler
    could not register its plugin); training goes on without it."""


class NoClusterManagerWarning(DaskAdaDampWarning):
    """``min_workers``/``max_workers`` were given, but the client has no
    cluster manager to scale; the fit trains on the workers that exist."""


class ScoringCacheWarning(DaskAdaDampWarning):
    """Training-set scores (``on_train=True``) are computed without caching:
    the workers return gradient sums, not predictions."""
