"""The estimators: skorch's classifier and regressor, trained on Dask.

:class:`DaskClassifier` and :class:`DaskRegressor` are skorch's
``NeuralNetClassifier`` and ``NeuralNetRegressor`` with
:class:`~dask_adadamp.net.DaskNetMixin` mixed in: the gradient of each
model update is computed on the cluster, everything else is skorch's.
"""
import dask.array as da
from skorch import NeuralNetClassifier, NeuralNetRegressor

from . import _docs as docs
from .net import DaskNetMixin

__all__ = ["DaskClassifier", "DaskNetMixin", "DaskRegressor"]


class DaskClassifier(DaskNetMixin, NeuralNetClassifier):
    """A skorch ``NeuralNetClassifier`` trained on a Dask cluster.

    Each model update's gradient is computed by the workers that hold its
    rows; the optimizer steps, callbacks, validation and prediction run in
    this process, as in skorch. Parameters not listed here are skorch's
    (``NeuralNetClassifier``), with skorch's defaults, and route as in
    skorch: ``module__*``, ``optimizer__*``, ``criterion__*``, and
    ``batch_size__*`` for the schedule.

    Parameters
    ----------
%(net_parameters)s
    Attributes
    ----------
    module_ : torch.nn.Module
        The trained module (on this process).
    damper_ : dask_adadamp.dampers.BaseDamper
        The fitted batch-size schedule.
    classes_ : numpy.ndarray
        The class labels seen in ``fit``.
    history : skorch.history.History
        One entry per epoch; ``history[epoch, "batches"]`` one per update.

    Notes
    -----
    ``fit(X, y)`` takes numpy arrays, torch tensors, a torch Dataset,
    scipy.sparse matrices, dicts of arrays, dask arrays, and dask
    DataFrames or Series (numeric columns; X becomes float32, integer or
    bool labels int64, float targets float32). Dask inputs are trained on
    where their blocks or partitions are, never gathered in this process;
    ``predict``, ``predict_proba`` and ``score`` take them too and compute
    on the workers.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from distributed import Client, LocalCluster
    >>> from dask_adadamp import DaskClassifier
    >>> cluster = LocalCluster(n_workers=2, threads_per_worker=1,
    ...                        processes=False, dashboard_address=':0')
    >>> client = Client(cluster)
    >>> X = np.random.default_rng(0).normal(size=(200, 4)).astype("float32")
    >>> y = (X[:, 0] > 0).astype("int64")
    >>> est = DaskClassifier(torch.nn.Linear, module__in_features=4,
    ...                      module__out_features=2,
    ...                      criterion=torch.nn.CrossEntropyLoss, lr=0.5,
    ...                      batch_size=64, grads_per_worker=32, max_epochs=5,
    ...                      train_split=None, random_state=0, verbose=0)
    >>> est = est.fit(X, y)
    >>> est.score(X, y) > 0.9
    True
    >>> est.history[-1, "model_updates"]
    20
    >>> client.close(); cluster.close()
    """

    def _target_summary(self, y):
        # The classes: a reduction on the cluster, only the labels return.
        return da.unique(y).compute()

    def _frame_target_dtype(self, dtypes):
        # Labels as torch's classification losses take them (int64); float
        # targets (BCEWithLogitsLoss's) as float32.
        if all(dtype.kind in "biu" for dtype in dtypes):
            return "int64"
        return "float32"


class DaskRegressor(DaskNetMixin, NeuralNetRegressor):
    """A skorch ``NeuralNetRegressor`` trained on a Dask cluster.

    As :class:`DaskClassifier`, for regression. Targets must be
    2-dimensional, as in skorch (``y.reshape(-1, 1)``, or
    ``ddf[["target"]]`` for a dask DataFrame).

    Parameters
    ----------
%(net_parameters)s
    Attributes
    ----------
    module_ : torch.nn.Module
        The trained module (on this process).
    damper_ : dask_adadamp.dampers.BaseDamper
        The fitted batch-size schedule.
    history : skorch.history.History
        One entry per epoch; ``history[epoch, "batches"]`` one per update.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from distributed import Client, LocalCluster
    >>> from dask_adadamp import DaskRegressor
    >>> cluster = LocalCluster(n_workers=2, threads_per_worker=1,
    ...                        processes=False, dashboard_address=':0')
    >>> client = Client(cluster)
    >>> X = np.random.default_rng(0).normal(size=(200, 3)).astype("float32")
    >>> y = (X @ np.array([[1.0], [-2.0], [0.5]])).astype("float32")
    >>> est = DaskRegressor(torch.nn.Linear, module__in_features=3,
    ...                     module__out_features=1, lr=0.1, batch_size=50,
    ...                     max_epochs=20, train_split=None, random_state=0,
    ...                     verbose=0).fit(X, y)
    >>> est.score(X, y) > 0.99
    True
    >>> client.close(); cluster.close()
    """


docs.fill(DaskClassifier, criterion="torch.nn.NLLLoss", criterion_note=(
    " (``torch.nn.CrossEntropyLoss`` for a module\n        that returns logits)"),
    split="ValidSplit(5, stratified=True)")
docs.fill(DaskRegressor, criterion="torch.nn.MSELoss", split="ValidSplit(5)")
