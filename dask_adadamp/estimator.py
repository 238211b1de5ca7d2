"""skorch nets whose training loop runs on a Dask cluster.

:class:`DaskClassifier` and :class:`DaskRegressor` are skorch's
``NeuralNetClassifier`` and ``NeuralNetRegressor`` with one step replaced:
the gradient of each model update is computed by Dask tasks (see
:mod:`dask_adadamp._engine`) instead of a local forward/backward pass. The
optimizer, callbacks, history, validation and prediction are skorch's own
and run in the client process.

One fit, seen from the client::

    fit_loop
      place training shards on the cluster          (engine.FitSession)
      for each epoch:
        EpochSampler: seeded permutation cut into updates and chunks
        for each update (skorch's run_single_epoch / train_step):
          train_step_single: weights out, summed gradients back
          optimizer.step()
        validation on the client, callbacks, history
      release the shards
"""
import math
import numbers
import threading
import warnings
from contextlib import contextmanager

import dask
import dask.array as da
import numpy as np
import torch
from sklearn.base import clone, is_classifier
from sklearn.utils import check_random_state
from sklearn.utils.metadata_routing import _routing_enabled, process_routing
from skorch import NeuralNet, NeuralNetClassifier, NeuralNetRegressor
from skorch.callbacks import BatchScoring
from skorch.callbacks import ProgressBar as SkorchProgressBar

from ._validation import check_argument, is_positive_int
from .exceptions import ClientClosedError
from . import dashboard, _engine as engine, _fitinputs as fitinputs, _netcopy as netcopy
from ._fit import Fit
from .callbacks import DashboardFeed, ProgressBar, UpdateLog
from .dampers import BaseDamper, Constant, GradientDescent
from ._sampling import Update
from ._worker import ModelSpec


#: The parameters every Dask net adds to skorch's, in numpydoc form (filled
#: into the docstrings below, as skorch fills its own).
_DASK_PARAMETERS = """\
    client : distributed.Client, str or None (default=None)
        The cluster to train on: a client, a scheduler address, or None
        for the current client (``distributed.get_client()``), falling back
        to a local cluster started once per process.
    grads_per_worker : int (default=128)
        Most examples in one chunk. An update of ``B`` examples is cut
        into about ``ceil(B / grads_per_worker)`` chunks, each computed by
        the worker that holds its rows.
    random_state : int, numpy.random.RandomState or None (default=None)
        Seeds the module's initialization, the placement of the data and
        every update's sample. With an int, fits are repeatable bit for
        bit, whatever the number of workers. With None the seed is drawn
        from torch's global generator, so ``torch.manual_seed(n)`` before
        a fit repeats it, as with skorch.
    max_batch_size : int or None (default=None)
        Most examples an update uses. When the batch-size schedule asks for
        ``B`` larger than this, the update uses ``max_batch_size`` examples
        and the learning rate ``lr * max_batch_size / B``. None: no
        maximum (an update never exceeds the training set).
    min_workers : int or None (default=None)
        Fewest workers the fit holds the cluster at; see ``max_workers``.
    max_workers : int or None (default=None)
        When it or ``min_workers`` is set, the fit holds the cluster behind
        the client (``client.cluster``: LocalCluster, dask-jobqueue,
        dask-kubernetes, anything with ``.scale``) at ``clip(ceil(B /
        grads_per_worker), min_workers, max_workers)`` workers for an
        update of ``B`` examples, asking without waiting, and gives it back
        at the size it found when the fit ends. None for both: the cluster
        is left alone.
"""


class DaskNetMixin:
    """Replace a skorch net's training step with gradients computed on Dask.

    Mixed in before a skorch net class, as in :class:`DaskClassifier`
    (``DaskNetMixin, NeuralNetClassifier``) and :class:`DaskRegressor`. It
    adds the parameters below to skorch's and replaces ``fit_loop`` and
    ``train_step_single``; prediction, validation, callbacks and
    ``history`` stay skorch's.

    Parameters
    ----------
%(parameters)s
    Notes
    -----
    ``batch_size`` is an int (a constant batch) or a schedule from
    :mod:`dask_adadamp.dampers`, as a class or an instance; its parameters
    route as ``batch_size__<name>``, like ``module__<name>``. The fitted
    schedule is ``damper_``. Every update records its ``batch_size``,
    ``lr`` and the schedule's signal (``loss_ratio``, ``noise_scale``) in
    ``history[epoch, "batches", i]``; every epoch the cumulative
    ``model_updates`` and ``n_examples``, and the epoch's largest
    ``batch_size``, last ``lr`` and last signal. A schedule that evaluates
    the training loss (:class:`~dask_adadamp.dampers.AdaDamp`) also records
    the rows those evaluations read, per update and cumulative per epoch,
    as ``loss_examples``. Validation and prediction
    use ``iterator_valid__batch_size`` if set, else an int ``batch_size``,
    else the schedule's ``initial`` size.

    ``device`` is the device the workers compute on (``"cuda"`` on GPU
    workers). The client keeps its copy of the module there too when it has
    that device, else on its CPU; the workers are asked for the device
    before any data is placed.

    Examples
    --------
    >>> import torch
    >>> from dask_adadamp import DaskNetMixin, DaskRegressor
    >>> issubclass(DaskRegressor, DaskNetMixin)
    True
    >>> est = DaskRegressor(torch.nn.Linear, grads_per_worker=64, max_workers=4)
    >>> est.get_params()["grads_per_worker"], est.get_params()["max_workers"]
    (64, 4)
    """

    # ``batch_size__factor=5`` routes to the schedule, as skorch routes
    # ``module__hidden`` to the module.
    prefixes_ = NeuralNet.prefixes_ + ["batch_size"]

    def __init__(self, module, *args, client=None, grads_per_worker=128,
                 random_state=None, max_batch_size=None, min_workers=None,
                 max_workers=None, **kwargs):
        super().__init__(module, *args, **kwargs)
        self.client = client
        self.grads_per_worker = grads_per_worker
        self.random_state = random_state
        self.max_batch_size = max_batch_size
        self.min_workers = min_workers
        self.max_workers = max_workers

    # --- initialization -------------------------------------------------

    def initialize(self):
        self._check_params()
        self.seed_ = self._base_seed()
        with self._on_client_device():
            super().initialize()
        return self.initialize_damper()

    def initialize_damper(self):
        """Build ``damper_`` from ``batch_size`` and ``batch_size__*``."""
        kwargs = self.get_params_for("batch_size")
        spec = self.batch_size
        train_size = fitinputs.train_batch_size(self)
        if train_size is not None:
            if not isinstance(spec, numbers.Integral):
                raise ValueError(
                    f"iterator_train__batch_size={train_size!r} and the schedule "
                    f"batch_size={spec!r} both set the training batch size; "
                    "pass one of them")
            spec = train_size
        if spec == -1:  # skorch's whole training set per batch
            damper = GradientDescent()
        elif isinstance(spec, numbers.Integral):
            if kwargs:
                raise ValueError(
                    f"{sorted('batch_size__' + k for k in kwargs)} need a "
                    f"schedule, but batch_size={spec!r} is an int; pass a "
                    "class from dask_adadamp.dampers as batch_size")
            damper = Constant(int(spec))
        elif isinstance(spec, type):
            try:
                damper = spec(**kwargs)
            except TypeError as exc:
                raise ValueError(f"batch_size__* parameters {sorted(kwargs)} "
                                 f"do not fit {spec.__name__}: {exc}") from exc
        else:
            damper = clone(spec).set_params(**kwargs)
        damper.check()
        self.damper_ = damper
        return self

    def set_params(self, **kwargs):
        # skorch re-initializes modules, criteria and optimizers for the
        # prefixed parameters it knows; the schedule is ours to rebuild.
        schedule = {k: v for k, v in kwargs.items()
                    if k == "batch_size" or k.startswith("batch_size__")}
        # iterator_train__batch_size sets the schedule too.
        rebuild = bool(schedule) or any(k.startswith("iterator_train") for k in kwargs)
        super().set_params(**{k: v for k, v in kwargs.items() if k not in schedule})
        vars(self).update(schedule)
        self._params_to_validate.update(schedule)
        if self.initialized_ and rebuild:
            self._check_params()
            self.initialize_damper()
        return self

    # ``device`` names where the workers compute. The client keeps its copy
    # of the module there too when it has such a device, else on the CPU, so
    # a laptop can drive GPU workers. skorch reads ``self.device`` in these
    # methods; they see the client's device.

    @contextmanager
    def _on_client_device(self):
        device = self.device
        local = _local_device(device)
        if local == device:  # the usual case, and every chunk on a worker
            yield
            return
        self.device = local
        try:
            yield
        finally:
            self.device = device

    def infer(self, x, **fit_params):
        with self._on_client_device():
            return super().infer(x, **fit_params)

    def get_loss(self, y_pred, y_true, *args, **kwargs):
        with self._on_client_device():
            return super().get_loss(y_pred, y_true, *args, **kwargs)

    def load_params(self, *args, **kwargs):
        with self._on_client_device():
            return super().load_params(*args, **kwargs)

    def initialize_module(self):
        # Seed initialization without touching the caller's global RNG. The
        # generator is the process's: fits starting at once in threads take
        # turns, or one's seed would initialize another's module.
        if not hasattr(self, "seed_"):  # _initialize_module before initialize
            self.seed_ = self._base_seed()
        with _SEEDED_INIT, torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed_)
            return super().initialize_module()

    def _base_seed(self):
        if isinstance(self.random_state, numbers.Integral):
            return int(self.random_state)
        if self.random_state is None:
            # From torch's global generator, which skorch's initialization
            # draws from: torch.manual_seed(n) before a fit repeats it.
            return int(torch.randint(2**31 - 1, ()))
        return int(check_random_state(self.random_state).randint(2**31 - 1))

    def _check_params(self):
        bs = self.batch_size
        if not (is_positive_int(bs) or bs == -1 or isinstance(bs, BaseDamper) or (
                isinstance(bs, type) and issubclass(bs, BaseDamper))):
            raise ValueError(
                f"batch_size={bs!r} is not accepted; pass a positive integer, "
                "-1 (full-batch gradient descent, as in skorch), or a schedule "
                "from dask_adadamp.dampers (a class or an instance)")
        check_argument("grads_per_worker", self.grads_per_worker, "a positive integer")
        for name in ("max_batch_size", "min_workers", "max_workers"):
            check_argument(name, getattr(self, name), "None or a positive integer")
        if (self.min_workers is not None and self.max_workers is not None
                and self.min_workers > self.max_workers):
            raise ValueError(
                f"min_workers={self.min_workers} is more than max_workers="
                f"{self.max_workers}; min_workers must be at most max_workers")
        rs = self.random_state
        if not (rs is None or isinstance(rs, (np.random.RandomState, np.random.Generator))
                or (isinstance(rs, numbers.Integral) and not isinstance(rs, bool)
                    and 0 <= rs < 2**32)):
            raise ValueError(
                f"random_state={rs!r} is not accepted; use None, an integer "
                "in [0, 2**32) or a numpy RandomState")
        engine.tree_policy()  # a bad dask config value fails before any cluster work

    def _check_device_name(self):
        # Only where a fit starts: initialize() passes any device to the
        # modules' .to(), as skorch does.
        try:
            if self.device is not None:
                torch.device(self.device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(
                f"device={self.device!r} is not accepted; use a torch device "
                "such as 'cpu', 'cuda' or 'cuda:1'") from exc

    def fit(self, X, y=None, **fit_params):
        """skorch's ``fit``; a ``device`` torch does not know is refused
        first, with a ``ValueError`` naming it."""
        self._check_device_name()  # before skorch's initialize() moves modules there
        return super().fit(X, y, **fit_params)

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        """skorch's ``partial_fit``; a ``device`` torch does not know is
        refused first, with a ``ValueError`` naming it."""
        self._check_device_name()
        return super().partial_fit(X, y, classes=classes, **fit_params)

    def _check_callbacks(self):
        if isinstance(self.batch_size, numbers.Integral):
            return
        for name, cb in self.callbacks_:
            if (isinstance(cb, SkorchProgressBar) and not isinstance(cb, ProgressBar)
                    and cb.batches_per_epoch == "auto"):
                raise ValueError(
                    f"callback {name!r}: skorch's ProgressBar(batches_per_epoch="
                    "'auto') divides by batch_size, which is a schedule here "
                    f"({self.batch_size!r}); use dask_adadamp.ProgressBar(), "
                    "which counts examples, or ProgressBar(batches_per_epoch="
                    "'count')")

    # --- the fit loop ---------------------------------------------------

    def fit_loop(self, X, y=None, epochs=None, *, _routing_method="fit",
                 **fit_params):
        """Train on the cluster; see skorch's ``NeuralNet.fit_loop``.

        The training data are placed on the cluster once for the whole
        call and released when it returns or fails.
        """
        self._check_params()
        self._check_device_name()
        self.check_training_readiness()
        self._check_callbacks()
        fitinputs.train_scoring_uncached(self)
        epochs = epochs if epochs is not None else self.max_epochs
        split_params = fit_params
        if _routing_enabled():  # as skorch routes them
            split_params = process_routing(self, _routing_method, **fit_params).get(
                "splitter", {"split": {}})["split"]
        X_train, y_train, dataset_train, dataset_valid, constant = self._split(
            X, y, fit_params, split_params)
        if epochs == 0:  # as in skorch: nothing to train, nothing to check
            return self
        fitinputs.check_batch_scoring(self, X_train)
        self._check_loss_on_client(X_train, y_train, constant)

        with engine.seceded():
            return self._fit_on_cluster(X_train, y_train, dataset_train,
                                        dataset_valid, epochs, constant, fit_params)

    #: Attributes that stay on the client when the net goes to the workers
    #: (the fit's schedule and its per-fit state).
    _client_only = ("client", "damper_", "_fit")

    @property
    def _default_callbacks(self):
        # skorch's, then the Dask nets' own records of each update (before
        # the user's callbacks, which may read them; PrintLog stays last).
        return [*super()._default_callbacks, ("update_log", UpdateLog()),
                ("dashboard", DashboardFeed())]

    def _fit_on_cluster(self, X_train, y_train, dataset_train, dataset_valid,
                        epochs, constant, fit_params):
        # The chunks get the constant fit parameters, and their own rows of
        # those with one value per example (placed with X); validation gets
        # them all as skorch hands them to every batch, whole.
        client = engine.resolve_client(self.client)
        engine.check_device(client, self.device or "cpu")
        spec = ModelSpec(engine.new_token(), self, device=self.device or "cpu",
                         fit_params=constant, drop=self._client_only)
        shard_rows = (None if isinstance(X_train, da.Array) else
                      engine.default_shard_rows(len(X_train), self.grads_per_worker))
        on_epoch_kwargs = {"dataset_train": dataset_train,
                           "dataset_valid": dataset_valid}
        iterator_valid = (None if dataset_valid is None
                          else self.get_iterator(dataset_valid, training=False))
        scaler = (engine.Scaler(client, self.grads_per_worker, self.min_workers,
                                self.max_workers)
                  if self.min_workers or self.max_workers else None)
        monitor = self._monitor(client, spec.token, X_train)
        status = "failed"
        try:
            with engine.FitSession(client, X_train, y_train, spec, shard_rows,
                                   self.seed_) as session:
                if isinstance(X_train, da.Array):
                    session.check_finite()
                self._fit = Fit(self, session, (X_train, y_train), monitor)
                try:
                    for _ in range(epochs):
                        self.notify("on_epoch_begin", **on_epoch_kwargs)
                        self._fit.begin_epoch()
                        with _client_threads():
                            self.run_single_epoch(self._fit.updates(scaler),
                                                  training=True, prefix="train",
                                                  step_fn=self.train_step)
                        self._fit.end_epoch()
                        self.run_single_epoch(iterator_valid, training=False,
                                              prefix="valid",
                                              step_fn=self.validation_step,
                                              **fit_params)
                        self.notify("on_epoch_end", **on_epoch_kwargs)
                finally:
                    del self._fit
            status = "finished"
        except Exception as exc:
            if client.status in ("closing", "closed"):
                raise ClientClosedError(
                    f"the Dask client {client} was closed during the fit (by "
                    "the program, or after it lost the scheduler); the "
                    "estimator keeps the weights of its last complete update. "
                    "Keep the client and its scheduler up until fit returns."
                ) from exc
            raise
        finally:
            if monitor is not None:
                monitor.close(status)
            # After the shards are released: less data to move off the
            # workers that leave.
            if scaler is not None:
                scaler.close()
        return self

    def _monitor(self, client, token, X_train):
        """The fit's reporter to the dashboard page, where the net has the
        ``DashboardFeed`` callback; its name: class, module and the token
        in the fit's keys on the cluster."""
        if not any(isinstance(cb, DashboardFeed) for _, cb in self.callbacks_):
            return None
        return dashboard.FitMonitor(
            client, f"{type(self).__name__}({type(self.module_).__name__}) {token}", {
                "schedule": repr(self.damper_),
                # a dask array after boolean indexing: not known before placement
                "n_train": None if math.isnan(X_train.shape[0]) else X_train.shape[0],
                "grads_per_worker": self.grads_per_worker})

    def train_step(self, batch, **fit_params):
        """skorch's step, at the schedule's learning rate."""
        groups = self.optimizer_.param_groups
        base = [group["lr"] for group in groups]
        # Scaled for this step only, so lr schedulers (skorch's LRScheduler)
        # keep acting on the base learning rate.
        for group in groups:
            group["lr"] = group["lr"] * self._fit.lr_scale
        try:
            step = super().train_step(batch, **fit_params)
            lr = groups[0]["lr"]
        finally:
            for group, lr_base in zip(groups, base):
                group["lr"] = lr_base
        self._fit.end_update(batch, lr)
        return step

    def notify(self, method_name, **cb_kwargs):
        """skorch's ``notify``; at the end of a training update,
        ``BatchScoring(on_train=True)`` callbacks get the update's rows as
        their ``batch`` (the others get the update itself: its row numbers
        and chunks)."""
        batch = cb_kwargs.get("batch")
        if method_name != "on_batch_end" or not isinstance(batch, Update):
            return super().notify(method_name, **cb_kwargs)
        self.on_batch_end(self, **cb_kwargs)
        rows = None
        for _, cb in self.callbacks_:
            if isinstance(cb, BatchScoring) and cb.on_train:
                # Taken from the client's copy of the data, and only here:
                # without such a callback nothing is sliced per update.
                if rows is None:
                    rows = fitinputs.batch_rows(*self._fit.train_data, batch.indices)
                cb.on_batch_end(self, **{**cb_kwargs, "batch": rows})
            else:
                cb.on_batch_end(self, **cb_kwargs)
        return None

    def train_step_single(self, batch, **fit_params):
        """Compute the update's mean gradient on the cluster.

        Sets ``.grad`` of every learnable parameter of the client's module
        to the batch's mean gradient; skorch's ``train_step`` then calls
        ``optimizer.step()``.
        """
        return self._fit.gradient(batch)

    def get_iterator(self, dataset, training=False):
        # skorch's iterators serve validation and prediction only; they need
        # an int when batch_size is a schedule.
        if isinstance(self.batch_size, numbers.Integral):
            return super().get_iterator(dataset, training=training)
        schedule = self.batch_size
        self.batch_size = getattr(getattr(self, "damper_", None), "initial", 128)
        try:
            return super().get_iterator(dataset, training=training)
        finally:
            self.batch_size = schedule

    # --- data -------------------------------------------------------------

    def _split(self, X, y, fit_params, split_params):
        """Training rows for the cluster, skorch's datasets, and the fit
        parameters every chunk gets as they are."""
        X, y = self._dask_frames_as_arrays(X, y)
        if isinstance(X, da.Array) or isinstance(y, da.Array):
            if self.train_split is not None:
                raise ValueError(
                    f"train_split={self.train_split!r} is not accepted with "
                    "dask arrays or DataFrames; pass train_split=None and score "
                    "held-out data with est.score(X_test, y_test)")
            X, y = self._check_dask(X, y)
            per_example, constant = fitinputs.split_fit_params(fit_params, X.shape[0])
            if per_example:
                raise ValueError(
                    f"fit parameters {sorted(per_example)} hold one value per "
                    "example, which is not accepted with dask arrays or "
                    "DataFrames; pass numpy arrays, or make them columns of X")
            return X, y, None, None, constant
        if y is None and not isinstance(X, torch.utils.data.Dataset):
            self.check_data(X, y)
        given, y_given = X, y
        X, y = fitinputs.as_arrays(X, y)
        fitinputs.check_arrays(X, y)
        self.check_data(X, y)
        n = fitinputs.n_rows(X)
        if isinstance(X, dict):  # skorch's own check and message
            self._merge_x_and_fit_params(X, fit_params)
        per_example, constant = fitinputs.split_fit_params(fit_params, n)
        # A Dataset is split as the user gave it (skorch's stratified split
        # refuses y=None), arrays as arrays.
        if isinstance(given, torch.utils.data.Dataset):
            dataset, y = given, y_given
        else:
            dataset = self.get_dataset(X, y)
        dataset_train, dataset_valid = self.get_split_datasets(dataset, y, **split_params)
        X_train, y_train = fitinputs.as_arrays(dataset_train, None)
        if fitinputs.n_rows(X_train) == 0:
            raise ValueError("the training split holds no examples; "
                             "pass more data or train_split=None")
        rows = None
        if per_example:
            rows = fitinputs.train_indices(dataset, dataset_train, n)
            if rows is None:
                raise ValueError(
                    f"fit parameters {sorted(per_example)} hold one value per "
                    f"example, but train_split={self.train_split!r} made a "
                    "training set of its own, so their training rows are "
                    "unknown; use train_split=None or a split returning "
                    "Subsets of the dataset (skorch's ValidSplit)")
        X_train = fitinputs.train_rows(X_train, per_example, rows)
        return X_train, y_train, dataset_train, dataset_valid, constant

    def _dask_frames_as_arrays(self, X, y=None):
        """Dask DataFrames and Series as lazy dask arrays (X float32, y
        :meth:`_frame_target_dtype`); other inputs as they are."""
        if fitinputs.is_dask_frame(X):
            X = fitinputs.dask_frame_as_array(X, "X", "float32")
        if fitinputs.is_dask_frame(y):
            y = fitinputs.dask_frame_as_array(
                y, "y", self._frame_target_dtype(y.dtypes if y.ndim == 2 else [y.dtype]))
        return X, y

    def _frame_target_dtype(self, dtypes):
        """The dtype of a dask frame's targets: float32, as the module's
        outputs (a regressor's)."""
        return "float32"

    def _check_dask(self, X, y):
        if y is None:
            raise ValueError("y=None is not accepted with a dask X; "
                             "pass the targets as y")
        X = da.asarray(X)
        y = da.asarray(y)
        if X.ndim == 0 or X.shape[0] == 0:
            raise ValueError(f"X of shape {X.shape} holds no examples")
        if not (np.isnan(X.shape[0]) or np.isnan(y.shape[0])) and X.shape[0] != y.shape[0]:
            raise ValueError(
                f"X has {X.shape[0]} rows but y has {y.shape[0]}; "
                "they must have the same length")
        self.check_data(X, y)
        return X, y

    def check_data(self, X, y=None):
        if y is None:
            raise ValueError("y=None is not accepted: the workers need the "
                             "targets. Pass y, or a Dataset yielding (X, y)")
        if isinstance(y, da.Array):
            y = self._target_summary(y)
        return super().check_data(X, y)

    def _target_summary(self, y):
        """What skorch's ``check_data`` needs of a dask target, computed
        without pulling the target to the client."""
        return np.empty((0,) + y.shape[1:], y.dtype)

    def _check_loss_on_client(self, X, y, fit_params):
        """Fail fast, before the cluster is touched, if the module or the
        criterion cannot take this data.

        The same 2-row forward initializes lazy parameters
        (``torch.nn.LazyLinear``), seeded like the module itself.
        """
        Xs, ys = _head(X), _head(y)
        if isinstance(Xs, netcopy.Rows):
            Xs, own = Xs.inputs()
            fit_params = {**fit_params, **own}
        lazy = netcopy.has_lazy_parameters(self)
        self._set_training(False)
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[], enabled=lazy):
                if lazy:
                    torch.manual_seed(self.seed_)
                try:
                    y_pred = self.infer(Xs, **fit_params)
                except Exception as exc:
                    raise ValueError(
                        f"X of shape {tuple(X.shape)} and dtype {X.dtype} does "
                        f"not fit the module {type(self.module_).__name__}: "
                        f"{exc}") from exc
                try:
                    # torch only warns when a loss broadcasts mismatched
                    # shapes (MSELoss of (n, 1) against (n,)): a silent
                    # wrong fit, so an error here.
                    with warnings.catch_warnings():
                        warnings.simplefilter("error", UserWarning)
                        self.get_loss(y_pred, torch.as_tensor(ys), X=Xs,
                                      training=False)
                except Exception as exc:
                    criterion = type(getattr(self, "criterion_", None)).__name__
                    raise ValueError(
                        f"y of shape {tuple(y.shape)} and dtype {y.dtype} does "
                        f"not fit the criterion {criterion} for outputs of "
                        f"shape {tuple(getattr(y_pred, 'shape', ()))}: {exc}"
                    ) from exc
        finally:
            self._set_training(True)

    # --- prediction ---------------------------------------------------------

    def predict_proba(self, X):
        """skorch's ``predict_proba``; for a dask array, DataFrame or
        Series, a dask array computed block by block on the workers
        (dask-ml's ``ParallelPostFit``). ``predict`` and ``score`` follow.

        Parameters
        ----------
        X : array-like, dask array or dask DataFrame
            The examples, as ``fit`` takes them.

        Returns
        -------
        numpy.ndarray or dask.array.Array
            The module's outputs (probabilities for a classifier), of the
            same kind as ``X``: a dask array for dask inputs.
        """
        X, _ = self._dask_frames_as_arrays(X)
        if isinstance(X, da.Array):
            # Block by block where the blocks are, as dask-ml's
            # ParallelPostFit (whose predict_proba needs classes_: not for
            # a regressor). The output's shape comes from one row of zeros.
            X = X.rechunk({axis: -1 for axis in range(1, X.ndim)})
            out = super().predict_proba(np.zeros((1,) + X.shape[1:], X.dtype))
            return X.map_blocks(
                _predict_proba_block, self, dtype=out.dtype,
                drop_axis=list(range(1, X.ndim)), new_axis=list(range(1, out.ndim)),
                chunks=(X.chunks[0],) + tuple((n,) for n in out.shape[1:]),
                meta=np.empty((0,) + out.shape[1:], out.dtype))
        return super().predict_proba(X)

    def score(self, X, y, sample_weight=None):
        """scikit-learn's score (accuracy for a classifier, R^2 for a
        regressor); dask DataFrames and Series are taken as dask arrays.

        Parameters
        ----------
        X : array-like, dask array or dask DataFrame
            The examples.
        y : array-like, dask array or dask DataFrame or Series
            Their targets.
        sample_weight : array-like or None (default=None)
            Weights of the examples.

        Returns
        -------
        float
            The score.
        """
        X, y = self._dask_frames_as_arrays(X, y)
        if not (isinstance(X, da.Array) or isinstance(y, da.Array)):
            return super().score(X, y, sample_weight=sample_weight)
        # As dask-ml's ParallelPostFit.score: the metric is computed where
        # the predictions are, and only the number comes back.
        from dask_ml import metrics
        y_pred, y = dask.persist(da.asarray(self.predict(X)), da.asarray(y))
        if _unknown_rows(y_pred) or _unknown_rows(y):
            # In memory now: only the blocks' sizes are read.
            y_pred, y = y_pred.compute_chunk_sizes(), y.compute_chunk_sizes()
        if y.chunks[0] != y_pred.chunks[0]:
            y = y.rechunk({0: y_pred.chunks[0]})
        if is_classifier(self):
            return float(metrics.accuracy_score(y, y_pred, sample_weight=sample_weight))
        if sample_weight is not None:
            raise ValueError("sample_weight is not accepted with dask inputs to "
                             "a regressor's score; pass numpy arrays")
        return _r2_score(y, y_pred)

    # --- cloning and pickling --------------------------------------------

    def __sklearn_clone__(self):
        # A client is a handle to a shared cluster, not a parameter value to
        # copy: clones train on the same cluster (and deepcopy of a live
        # client fails).
        client = self.client
        self.client = None
        try:
            cloned = super().__sklearn_clone__()
        finally:
            self.client = client
        cloned.client = client
        return cloned

    def __getstate__(self):
        state = super().__getstate__()
        # A live client cannot be pickled; the unpickled estimator uses the
        # client current where it is loaded.
        if not (state.get("client") is None or isinstance(state["client"], str)):
            state["client"] = None
        return state


@contextmanager
def _client_threads():
    """Run the client's share of the training updates on
    ``adadamp.client-threads`` torch threads (dask config; default 1; None
    leaves torch's setting).

    The client's work per update (flattening the weights, the optimizer
    step) is a few passes over the weights, which gain little from threads.
    Where the client shares cores with workers, a parallel region waits for
    a thread the OS gave to a worker, and an idle BLAS thread spins
    (``benchmarks/client_threads.py``: 33.7 against 26.4 ms per update on 2
    cores with 2 workers). Validation and prediction keep the process's
    settings.

    >>> before = torch.get_num_threads()
    >>> with _client_threads():
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    from threadpoolctl import threadpool_limits

    threads = dask.config.get("adadamp.client-threads", 1)
    if threads is None:
        yield
        return
    # Process-wide settings: fits running at once in threads share one
    # change, made by the first to start and undone by the last to end.
    with _THREADS_LOCK:
        if _THREADS["fits"] == 0:
            _THREADS["torch"] = torch.get_num_threads()
            torch.set_num_threads(int(threads))
            # numpy's BLAS too: after a call (the gradient's norm is a dot
            # product), OpenBLAS's idle threads spin; measured on 2 cores,
            # one of them used 76% of a core for the whole fit, and an
            # update took 31.6 ms instead of 23.9.
            _THREADS["blas"] = threadpool_limits(limits=int(threads))
        _THREADS["fits"] += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _THREADS["fits"] -= 1
            if _THREADS["fits"] == 0:
                _THREADS.pop("blas").restore_original_limits()
                torch.set_num_threads(_THREADS.pop("torch"))


_THREADS_LOCK = threading.Lock()
_THREADS = {"fits": 0}
_SEEDED_INIT = threading.RLock()


def _predict_proba_block(block, est):
    return est.predict_proba(block)


def _r2_score(y, y_pred):
    """scikit-learn's ``r2_score`` (outputs averaged uniformly) of dask
    arrays, summed on the cluster (dask-ml's fails on blocks of unknown
    size)."""
    y = y.reshape((y.shape[0], -1)) if y.ndim != 2 else y
    y_pred = y_pred.reshape((y_pred.shape[0], -1)) if y_pred.ndim != 2 else y_pred
    residual, total = dask.compute(((y - y_pred) ** 2).sum(axis=0),
                                   ((y - y.mean(axis=0)) ** 2).sum(axis=0))
    # As scikit-learn: a constant target scores 1 if predicted exactly, else 0.
    scores = np.where(total > 0, 1 - residual / np.where(total > 0, total, 1),
                      np.where(residual > 0, 0.0, 1.0))
    return float(scores.mean())


def _unknown_rows(a):
    return any(math.isnan(c) for c in a.chunks[0])


def _head(a, n=2):
    """The first ``n`` rows of an array; of a dask array, computed from its
    first non-empty block, whose size need not be known."""
    if not isinstance(a, da.Array):
        return a[:n]
    if not _unknown_rows(a):
        return a[:n].compute()
    a = a.rechunk({axis: -1 for axis in range(1, a.ndim)})
    for block in a.to_delayed().ravel():
        rows = dask.delayed(lambda b: b[:n])(block).compute()
        if len(rows):
            return np.require(rows, requirements="W")  # torch takes it
    raise ValueError(f"the dask array of shape {a.shape} holds no examples")


def _local_device(device):
    """``device`` if this process has it, else ``"cpu"``.

    >>> _local_device("cpu"), _local_device(None)
    ('cpu', None)
    """
    if device is None or device == "cpu":
        return device
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        return device  # not torch's: the modules' .to() decides, as in skorch
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": torch.backends.mps.is_available()}
    return device if available.get(kind, False) else "cpu"


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
    module : torch.nn.Module class or instance
        The network. Its class must be importable on the workers, or be
        defined in ``__main__`` (pickled by value).
    criterion : torch criterion class (default=torch.nn.NLLLoss)
        The loss, as in skorch (``torch.nn.CrossEntropyLoss`` for a module
        that returns logits).
    optimizer : torch.optim.Optimizer class (default=torch.optim.SGD)
        Any torch optimizer; its state stays in this process.
    lr : float (default=0.01)
        The learning rate (scaled down past ``max_batch_size``).
    max_epochs : int (default=10)
        Passes over the training data.
    batch_size : int, schedule class or schedule (default=128)
        Examples per model update: an int (constant), -1 (the whole training
        set), or a schedule from :mod:`dask_adadamp.dampers` such as
        ``GeoDamp(initial=32, factor=2, delay=5)``.
    train_split : callable or None (default=skorch's ValidSplit(5, stratified=True))
        skorch's validation split; None for dask arrays and DataFrames
        (score held-out data with :meth:`score`).
%(parameters)s    **kwargs
        skorch's other parameters (``callbacks``, ``device``, ``verbose``,
        ``warm_start``, ...) and routed ``module__*``, ``optimizer__*``,
        ``criterion__*`` and ``batch_size__*`` values.

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
    ...                        dashboard_address=':0')
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
    module : torch.nn.Module class or instance
        The network. Its class must be importable on the workers, or be
        defined in ``__main__`` (pickled by value).
    criterion : torch criterion class (default=torch.nn.MSELoss)
        The loss, as in skorch.
    optimizer : torch.optim.Optimizer class (default=torch.optim.SGD)
        Any torch optimizer; its state stays in this process.
    lr : float (default=0.01)
        The learning rate (scaled down past ``max_batch_size``).
    max_epochs : int (default=10)
        Passes over the training data.
    batch_size : int, schedule class or schedule (default=128)
        Examples per model update: an int (constant), -1 (the whole training
        set), or a schedule from :mod:`dask_adadamp.dampers`.
    train_split : callable or None (default=skorch's ValidSplit(5))
        skorch's validation split; None for dask arrays and DataFrames.
%(parameters)s    **kwargs
        skorch's other parameters and routed ``module__*``,
        ``optimizer__*``, ``criterion__*`` and ``batch_size__*`` values.

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
    ...                        dashboard_address=':0')
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


for _cls in (DaskNetMixin, DaskClassifier, DaskRegressor):
    _cls.__doc__ = _cls.__doc__.replace("%(parameters)s", _DASK_PARAMETERS)
