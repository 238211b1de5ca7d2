"""Run dask-ml's incremental searches with dask-adadamp estimators.

What is broken upstream
-----------------------
dask-ml's incremental searches (:class:`dask_ml.model_selection.HyperbandSearchCV`,
``IncrementalSearchCV``, ``SuccessiveHalvingSearchCV``,
``InverseDecaySearchCV``) run their driver coroutine
``dask_ml.model_selection._incremental._fit`` inside the client's event
loop, and that coroutine calls the top-level :func:`dask.persist`. Recent
dask (seen with 2026.8) :func:`dask.persist` refuses a client that is asynchronous in
the calling context, so with dask 2026.8 and dask-ml 2025.1 every search
fails at once with ``RuntimeError: Attempting to use an asynchronous Client
in a synchronous context of `dask.compute``` (dask/dask-ml#1016).

dask-ml runs ``partial_fit`` inside worker tasks. A dask-adadamp estimator
fitted there places its rows on the workers and calls their handlers
directly for each update (no tasks of its own); it secedes from the
worker's thread pool while it waits for them (see
:func:`dask_adadamp._cluster.seceded`), so that needs nothing here.

What this layer changes
-----------------------
Only for the duration of a search's ``fit`` (:func:`dask_ml_fixed`), the
module attribute ``dask`` of ``dask_ml.model_selection._incremental``
becomes a proxy of the :mod:`dask` module whose ``persist`` hands the
collections to the current client's own :meth:`distributed.Client.persist`
when that client is asynchronous in the calling context (the case dask
refuses), and calls :func:`dask.persist` otherwise. Everything else is the
real :mod:`dask`, and dask-ml's attribute is restored when the search ends,
also when it fails. Nothing else of dask-ml is changed, and the layer
works for any estimator, not only dask-adadamp's.

:class:`HyperbandSearchCV`, :class:`IncrementalSearchCV`,
:class:`SuccessiveHalvingSearchCV` and :class:`InverseDecaySearchCV` are
dask-ml's classes with that ``fit``; :func:`patch_dask_ml` applies the same
swap for the rest of the process, for code that imports dask-ml's classes
directly. The swap is process-global while it lasts and counted:
overlapping searches share it, and dask-ml's attribute comes back when the
last of them ends.

When it can be removed
----------------------
Once dask-ml stops calling :func:`dask.persist` from ``_fit``
(dask/dask-ml#1016 fixed): then the proxy's ``persist`` is never reached
in the failing case, and this module can go when the minimum dask-ml
version contains the fix.
"""
import threading
import types
from contextlib import contextmanager

import dask
from dask.base import unpack_collections
from dask_ml.model_selection import HyperbandSearchCV as _HyperbandSearchCV
from dask_ml.model_selection import IncrementalSearchCV as _IncrementalSearchCV
from dask_ml.model_selection import InverseDecaySearchCV as _InverseDecaySearchCV
from dask_ml.model_selection import (
    SuccessiveHalvingSearchCV as _SuccessiveHalvingSearchCV,
)
from dask_ml.model_selection import _incremental

__all__ = ["HyperbandSearchCV", "IncrementalSearchCV", "InverseDecaySearchCV",
           "SuccessiveHalvingSearchCV", "dask_ml_fixed", "patch_dask_ml",
           "unpatch_dask_ml"]

# dask-ml's original, taken at import so that restoring never restores a
# patched value (for instance after a nested or overlapping search).
_ORIGINAL_DASK = _incremental.dask

_lock = threading.Lock()
_depth = 0  # searches (or patch_dask_ml) currently holding the swap


def persist(*args, **kwargs):
    """:func:`dask.persist` that also works inside the client's event loop.

    Parameters
    ----------
    *args
        Dask collections, possibly nested in lists, tuples and dicts, as
        :func:`dask.persist` takes them.
    **kwargs
        Forwarded to :func:`dask.persist`, or to
        :meth:`distributed.Client.persist` (``priority`` when it is a
        number, ``optimize_graph``).

    Returns
    -------
    tuple
        The arguments with their collections persisted, as
        :func:`dask.persist` returns them.
    """
    from distributed import default_client
    try:
        client = default_client()
    except ValueError:
        client = None
    if client is None or not client.asynchronous:
        # Not the failing case: dask's own persist is right here.
        return dask.persist(*args, **kwargs)
    collections, repack = unpack_collections(
        *args, traverse=kwargs.get("traverse", True))
    if not collections:
        return args
    options = {"optimize_graph": kwargs.get("optimize_graph", True)}
    # dask-ml's pre-2021 branch passes a dict of priorities that Client.persist
    # no longer takes; the graph's own annotations carry them today.
    if isinstance(kwargs.get("priority"), (int, float)):
        options["priority"] = kwargs["priority"]
    # Client.persist only submits the graph (no waiting), so it is safe to call
    # from the event loop; it returns futures-backed collections like
    # dask.persist does with a synchronous client.
    return repack(client.persist(list(collections), **options))


def _dask_proxy():
    """The :mod:`dask` module with ``persist`` replaced by :func:`persist`."""
    proxy = types.ModuleType("dask")
    proxy.__dict__.update(vars(dask))
    proxy.persist = persist
    return proxy


def _acquire():
    global _depth
    with _lock:
        if _depth == 0:
            _incremental.dask = _dask_proxy()
        _depth += 1


def _release():
    global _depth
    with _lock:
        _depth -= 1
        if _depth == 0:
            _incremental.dask = _ORIGINAL_DASK


@contextmanager
def dask_ml_fixed():
    """Swap in the fix for the duration of a ``with`` block.

    Nested and overlapping blocks share one swap; dask-ml's attribute is
    restored when the last block exits, also when it raises.

    Yields
    ------
    None
    """
    _acquire()
    try:
        yield
    finally:
        _release()


_patched = False


def patch_dask_ml():
    """Apply the fix for the rest of the process (idempotent).

    For code that uses :mod:`dask_ml.model_selection`'s classes directly.
    :func:`unpatch_dask_ml` undoes it.
    """
    global _patched
    if not _patched:
        _acquire()
        _patched = True


def unpatch_dask_ml():
    """Undo :func:`patch_dask_ml` (searches running under
    :func:`dask_ml_fixed` keep their swap until they end)."""
    global _patched
    if _patched:
        _patched = False
        _release()


class _FixedFit:
    """Mixin: ``fit`` runs under :func:`dask_ml_fixed`."""

    def fit(self, X, y=None, **fit_params):
        """Find the best parameters, as dask-ml's ``fit``.

        Parameters
        ----------
        X, y : array-like
            Training data; dask arrays are split into blocks, one block
            per ``partial_fit`` call.
        **fit_params
            Additional ``partial_fit`` keyword arguments.

        Returns
        -------
        self
        """
        with dask_ml_fixed():
            result = super().fit(X, y, **fit_params)
            if hasattr(result, "__await__"):
                # Asynchronous client: dask-ml returns a coroutine, which must
                # run while the swap is in place.
                return _await_fixed(result)
            return result


async def _await_fixed(coroutine):
    with dask_ml_fixed():
        return await coroutine


class HyperbandSearchCV(_FixedFit, _HyperbandSearchCV):
    """dask-ml's :class:`~dask_ml.model_selection.HyperbandSearchCV`, whose
    ``fit`` works with dask 2026.8 (see :mod:`dask_adadamp.compat`).

    Parameters, attributes and methods are dask-ml's.

    Examples
    --------
    >>> import dask.array as da, torch
    >>> from distributed import Client, LocalCluster
    >>> from sklearn.datasets import make_classification
    >>> from dask_adadamp import DaskClassifier
    >>> from dask_adadamp.compat import HyperbandSearchCV
    >>> from dask_adadamp.models import MLP
    >>> cluster = LocalCluster(n_workers=2, threads_per_worker=1,
    ...                        processes=False, dashboard_address=':0')
    >>> client = Client(cluster)
    >>> X, y = make_classification(n_samples=600, n_features=20, random_state=0)
    >>> X = da.from_array(X.astype("float32"), chunks=200)
    >>> y = da.from_array(y, chunks=200)
    >>> est = DaskClassifier(MLP, module__n_features=20, module__n_classes=2,
    ...                      criterion=torch.nn.CrossEntropyLoss, batch_size=64,
    ...                      max_epochs=1, train_split=None, verbose=0,
    ...                      random_state=0)
    >>> search = HyperbandSearchCV(est, {"lr": [1e-4, 0.3]}, max_iter=3,
    ...                            random_state=0).fit(X, y)
    >>> search.best_params_
    {'lr': 0.3}
    >>> client.close(); cluster.close()
    """


class IncrementalSearchCV(_FixedFit, _IncrementalSearchCV):
    """dask-ml's :class:`~dask_ml.model_selection.IncrementalSearchCV`, whose
    ``fit`` works with dask 2026.8 (see :mod:`dask_adadamp.compat`)."""


class SuccessiveHalvingSearchCV(_FixedFit, _SuccessiveHalvingSearchCV):
    """dask-ml's :class:`~dask_ml.model_selection.SuccessiveHalvingSearchCV`,
    whose ``fit`` works with dask 2026.8 (see :mod:`dask_adadamp.compat`)."""


class InverseDecaySearchCV(_FixedFit, _InverseDecaySearchCV):
    """dask-ml's :class:`~dask_ml.model_selection.InverseDecaySearchCV`, whose
    ``fit`` works with dask 2026.8 (see :mod:`dask_adadamp.compat`)."""
