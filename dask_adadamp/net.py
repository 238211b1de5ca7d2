"""The skorch net whose training loop runs on a Dask cluster.

:class:`DaskNetMixin`, mixed into skorch's ``NeuralNetClassifier`` and
``NeuralNetRegressor`` (:mod:`dask_adadamp.estimator`), replaces one step:
the gradient of each model update is computed on the workers that hold
the batch's rows, by direct calls to the handler each worker runs (not
Dask tasks: see :mod:`dask_adadamp._engine` and
:mod:`dask_adadamp._extension`), instead of a local forward/backward pass.
The optimizer, callbacks, history, validation and prediction are skorch's
own and run in the client process.

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
from contextlib import contextmanager

import dask.array as da
import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils.metadata_routing import _routing_enabled, process_routing
from skorch import NeuralNet
from skorch.callbacks import BatchScoring

from . import _cluster as cluster
from . import _docs as docs
from . import _engine as engine
from . import _fitinputs as fitinputs
from . import _netparams as netparams
from . import _predict as predict
from . import _prepare as prepare
from . import dashboard
from ._fit import Fit
from ._process import client_threads, local_device, seeded
from ._sampling import Update
from ._worker import ModelSpec
from .callbacks import DashboardFeed, PrintLog, UpdateLog
from .exceptions import ClientClosedError


class DaskNetMixin:
    """Replace a skorch net's training step with gradients computed on Dask.

    Mixed in before a skorch net class, as in :class:`~dask_adadamp.DaskClassifier`
    (``DaskNetMixin, NeuralNetClassifier``) and :class:`~dask_adadamp.DaskRegressor`. It
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

    ``infer`` and ``get_loss`` run on the workers, on each chunk of an
    update's rows; ``train_step``, ``train_step_single`` (which adds the
    update's gradient to ``.grad``), the optimizer, callbacks and history
    stay on the client. X of a dtype the module does not take (float64 from
    scikit-learn's transformers) is converted to the module's dtype once,
    before it is placed, and each validation and prediction batch with it;
    ``input_dtype_`` is that dtype, or None where the module took X as
    given.

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

    def initialize_damper(self):
        """Build ``damper_`` from ``batch_size`` and ``batch_size__*``."""
        self.damper_ = netparams.build_damper(self)
        return self

    def _check_params(self):
        netparams.check_params(self)

    def _check_device_name(self):
        netparams.check_device_name(self.device)

    def initialize(self):
        self._check_params()
        self.seed_ = self._base_seed()
        with self._on_client_device():
            super().initialize()
        return self.initialize_damper()

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
        local = local_device(device)
        if local == device:  # the usual case, and every chunk on a worker
            yield
            return
        self.device = local
        try:
            yield
        finally:
            self.device = device

    def infer(self, x, **fit_params):
        """skorch's ``infer``; X of the dtype the fit converted the training
        data from (``input_dtype_``, set where the module did not take X
        as given) is converted the same way, so that validation and
        prediction take what fit took."""
        dtype = getattr(self, "input_dtype_", None)
        if dtype is not None:
            x = fitinputs.as_dtype(x, dtype)
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
        with seeded(self.seed_):
            return super().initialize_module()

    def _base_seed(self):
        if isinstance(self.random_state, numbers.Integral):
            return int(self.random_state)
        if self.random_state is None:
            # From torch's global generator, which skorch's initialization
            # draws from: torch.manual_seed(n) before a fit repeats it.
            return int(torch.randint(2**31 - 1, ()))
        return int(check_random_state(self.random_state).randint(2**31 - 1))

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
        netparams.check_callbacks(self)
        fitinputs.train_scoring_uncached(self)
        epochs = epochs if epochs is not None else self.max_epochs
        split_params = fit_params
        if _routing_enabled():  # as skorch routes them
            split_params = process_routing(self, _routing_method, **fit_params).get(
                "splitter", {"split": {}})["split"]
        X_train, y_train, dataset_train, dataset_valid, constant, n_given = \
            prepare.split(self, X, y, fit_params, split_params)
        if epochs == 0:  # as in skorch: nothing to train, nothing to check
            return self
        fitinputs.check_batch_scoring(self, X_train)
        # X of a dtype the module does not take (float64 from scikit-learn's
        # transformers) is converted once, before it is placed; validation
        # and prediction convert each batch (infer).
        self.input_dtype_ = prepare.check_loss_on_client(self, X_train, constant,
                                                         n_given)
        if self.input_dtype_ is not None:
            X_train = fitinputs.as_dtype(X_train, self.input_dtype_)
        spec = ModelSpec(engine.new_token(), self, device=self.device or "cpu",
                         fit_params=constant, drop=self._client_only)
        # Whether the chunks' losses are means or sums, from the net's own
        # get_loss on a few rows, run as on the workers.
        spec.mean, spec.why = prepare.check_chunks(
            self, self._client_only, X_train, y_train, constant, n_given)

        with cluster.seceded():
            return self._fit_on_cluster(X_train, y_train, dataset_train,
                                        dataset_valid, epochs, spec, fit_params)

    #: Attributes that stay on the client when the net goes to the workers
    #: (the fit's schedule and its per-fit state).
    _client_only = ("client", "damper_", "_fit")

    @property
    def _default_callbacks(self):
        # skorch's, then the Dask nets' own records of each update (before
        # the user's callbacks, which may read them; PrintLog stays last).
        # Their PrintLog leaves out the history's list-valued columns.
        return [*((name, PrintLog() if name == "print_log" else callback)
                  for name, callback in super()._default_callbacks),
                ("update_log", UpdateLog()), ("dashboard", DashboardFeed())]

    def _fit_on_cluster(self, X_train, y_train, dataset_train, dataset_valid,
                        epochs, spec, fit_params):
        # The chunks get the constant fit parameters (in the spec), and their
        # own rows of those with one value per example (placed with X);
        # validation gets them all as skorch hands them to every batch, whole.
        client = cluster.resolve_client(self.client)
        cluster.check_device(client, self.device or "cpu")
        shard_rows = (None if isinstance(X_train, da.Array) else
                      engine.default_shard_rows(len(X_train), self.grads_per_worker,
                                                  self.max_workers))
        on_epoch_kwargs = {"dataset_train": dataset_train,
                           "dataset_valid": dataset_valid}
        iterator_valid = (None if dataset_valid is None
                          else self.get_iterator(dataset_valid, training=False))
        scaler = (cluster.Scaler(
            client, self.grads_per_worker, self.min_workers, self.max_workers,
            damper=self.damper_, max_batch_size=self.max_batch_size,
            n_train=None if math.isnan(X_train.shape[0]) else X_train.shape[0],
            last_epoch=len(self.history) + epochs - 1)
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
                        with client_threads():
                            self.run_single_epoch(self._fit.updates(scaler),
                                                  training=True, prefix="train",
                                                  step_fn=self._train_update)
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

    def _train_update(self, batch, **fit_params):
        """One model update: the net's ``train_step`` (skorch's, or an
        override such as skorch's gradient accumulation recipe) at the
        schedule's learning rate, then the update's records."""
        groups = getattr(self.optimizer_, "param_groups", None)
        if not isinstance(groups, list):
            # not a torch optimizer (a mock, as skorch's own tests patch in,
            # reached now that train_step overrides run inside this method)
            groups = []
        base = [group["lr"] for group in groups]
        # Scaled for this step only, so lr schedulers (skorch's LRScheduler)
        # keep acting on the base learning rate.
        for group in groups:
            group["lr"] = group["lr"] * self._fit.lr_scale
        try:
            step = self.train_step(batch, **fit_params)
            lr = groups[0]["lr"] if groups else self.lr * self._fit.lr_scale
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
        """Compute the update's gradient on the cluster.

        Adds the batch's gradient (of its mean loss, or of its sum where the
        loss sums) to ``.grad`` of every learnable parameter of the client's
        module, as skorch's ``loss.backward()`` does: after skorch's
        ``zero_grad`` that is the gradient, and calls between two optimizer
        steps accumulate (skorch's gradient accumulation recipe). skorch's
        ``train_step`` then calls ``optimizer.step()``.

        ``batch`` is an :class:`~dask_adadamp._sampling.Update`: the numbers
        of the update's rows and the chunks they are cut into on the
        workers, not ``(X, y)`` tensors. An override that computes on the
        batch's tensors cannot run (unpacking it raises
        :class:`~dask_adadamp.exceptions.CustomizationError`); override
        ``infer`` or ``get_loss``, which run on the workers, or call this
        method and work with ``.grad`` after it.
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
            return predict.predict_proba(self, X, super().predict_proba)
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
        return predict.score(self, X, y, sample_weight)

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
        # Pickled during a fit (skorch's Checkpoint(f_pickle=...)): the
        # fit's state (its session on the cluster) stays behind.
        state.pop("_fit", None)
        return state


docs.fill(DaskNetMixin)
