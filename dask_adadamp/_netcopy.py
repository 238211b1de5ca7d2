"""The fit's skorch net, as the workers compute with it.

A fit sends the workers a copy of the net without its weights, once: the
net's own class (with the user's overrides of ``infer``, ``get_loss`` and
``_set_training``), every module and criterion it registers (skorch's
``_modules`` and ``_criteria``, e.g. ``module_``, ``criterion_`` and any a
subclass adds in ``initialize_module``) with their parameters on PyTorch's
meta device, their buffers, and the net's plain attributes. History,
callbacks, optimizers, the client and the data stay on the client (the copy
holds an :class:`OnClient` in their place, which raises
:class:`~dask_adadamp.exceptions.CustomizationError` where a worker's
``infer`` or ``get_loss`` uses one), as do methods replaced on the instance
(a mock of ``net.score``) other than those a chunk calls
(:data:`WORKER_METHODS`).

A chunk then runs skorch's ``train_step_single`` on the worker's copy:
``net.infer(Xi, **fit_params)`` and ``net.get_loss(y_pred, yi, X=Xi,
training=True)``, with every module and criterion in training mode.

The weights travel as one flat float32 vector over :func:`net_parameters`:
the parameters of ``_modules`` and then ``_criteria``, in that order, each
in ``named_parameters()`` order, a parameter shared by two of them once.
That is the order of skorch's ``NeuralNet.get_all_learnable_params``, over
which skorch builds the optimizer. Buffers travel by name,
``"<attribute>.<buffer>"`` (e.g. ``"module_.bn.running_mean"``).

Examples
--------
>>> import torch
>>> from skorch import NeuralNetRegressor
>>> class TwoModules(NeuralNetRegressor):
...     def initialize_module(self):
...         super().initialize_module()
...         self.head_ = torch.nn.Linear(1, 1)
...         return self
>>> net = TwoModules(torch.nn.Linear, module__in_features=3,
...                  module__out_features=1).initialize()
>>> [tuple(p.shape) for p in net_parameters(net)]
[(1, 3), (1,), (1, 1), (1,)]
>>> copy = load(dump(net), "cpu")
>>> type(copy).__name__, copy.head_.weight.shape
('TwoModules', torch.Size([1, 1]))
"""
import copy
import io

import cloudpickle
import numpy as np
import torch
from skorch import NeuralNet
from torch.nn.utils import parameters_to_vector

from .exceptions import CustomizationError

#: Attributes of a net that never travel to the workers: the record of the
#: fit, the objects that drive it from the client, and the data.
CLIENT_ONLY = frozenset({
    "history_", "callbacks", "callbacks_", "virtual_params_", "train_split",
    "dataset", "iterator_train", "iterator_valid"})


#: The net's methods a chunk calls on the workers.
WORKER_METHODS = frozenset({"infer", "get_loss", "_set_training",
                            "_merge_x_and_fit_params"})


def components(net):
    """The net's initialized modules and criteria, ``{attribute: object}``
    in ``_modules`` then ``_criteria`` order (a criterion may be a plain
    function)."""
    return {name + "_": getattr(net, name + "_")
            for name in net._modules + net._criteria}


def net_parameters(net):
    """Every parameter of every module and criterion of ``net``, in the
    order of the flat weights (see the module's docstring)."""
    # skorch's own method, not an override of it: the weights must cover
    # every parameter, whichever the optimizer updates.
    return [p for _, p in NeuralNet.get_all_learnable_params(net)]


def net_buffers(net):
    """``{"<attribute>.<buffer>": tensor}`` for the buffers of every module
    and criterion of ``net`` (a shared one once)."""
    seen, out = set(), {}
    for attr, part in components(net).items():
        if isinstance(part, torch.nn.Module):
            for name, b in part.named_buffers():
                if id(b) not in seen:
                    seen.add(id(b))
                    out[f"{attr}.{name}"] = b
    return out


def flat_weights(net):
    """``(weights, buffers)``: the flat float32 weights and the buffers as
    numpy arrays, what an update sends."""
    weights = parameters_to_vector(net_parameters(net)).detach().cpu().numpy()
    buffers = {k: b.detach().cpu().numpy() for k, b in net_buffers(net).items()}
    return weights, buffers


def add_gradients(net, flat):
    """Add to ``.grad`` of every parameter that requires one its slice of the
    flat vector ``flat``, as ``loss.backward()`` does: a parameter without a
    gradient (after ``optimizer.zero_grad()``) gets the slice itself, one
    with a gradient gets the sum (skorch's gradient accumulation recipe calls
    ``train_step_single`` several times between two steps).

    >>> import numpy as np
    >>> from skorch import NeuralNetRegressor
    >>> net = NeuralNetRegressor(torch.nn.Linear, module__in_features=1,
    ...                          module__out_features=1).initialize()
    >>> add_gradients(net, np.ones(2, "float32"))
    >>> add_gradients(net, np.ones(2, "float32"))
    >>> net.module_.weight.grad.tolist(), net.module_.bias.grad.tolist()
    ([[2.0]], [2.0])
    """
    offset = 0
    for p in net_parameters(net):
        n = p.numel()
        if p.requires_grad:
            grad = torch.from_numpy(flat[offset:offset + n]).view_as(p).to(p.device)
            if p.grad is None:
                p.grad = grad
            else:
                p.grad.add_(grad)  # in place, as backward accumulates
        offset += n


def set_buffers(net, buffers):
    """Copy ``{name: array}`` (as :func:`net_buffers` names them) into the
    net's buffers."""
    if not buffers:
        return
    own = net_buffers(net)
    with torch.no_grad():
        for name, value in buffers.items():
            own[name].copy_(torch.as_tensor(value))


def has_lazy_parameters(net):
    """Whether a module or criterion still has uninitialized (lazy)
    parameters, e.g. those of ``torch.nn.LazyLinear`` before a forward."""
    return any(isinstance(p, torch.nn.parameter.UninitializedParameter)
               for part in components(net).values()
               if isinstance(part, torch.nn.Module) for p in part.parameters())


def dump(net, drop=()):
    """The net without its weights, pickled (see the module's docstring).

    Parameters
    ----------
    net : skorch.NeuralNet
        An initialized net.
    drop : iterable of str
        More attributes that stay on the client.

    Returns
    -------
    bytes
    """
    state = _travelling_state(net, drop)
    # One deepcopy of the whole state with the parameters swapped for meta
    # tensors: only structure is copied, and a module that two attributes
    # share (a criterion holding the module) stays shared.
    memo = {id(p): torch.nn.Parameter(torch.empty_like(p, device="meta"),
                                      requires_grad=p.requires_grad)
            for p in net_parameters(net)}
    f = io.BytesIO()
    try:
        cloudpickle.dump((type(net), copy.deepcopy(state, memo)), f)
    except Exception as exc:
        bad = [k for k, v in state.items() if not _picklable(v)]
        raise TypeError(
            f"the net cannot be sent to the Dask workers: its attributes "
            f"{bad or '(unknown)'} cannot be pickled ({exc}); the workers "
            "need the net's class, modules, criteria and plain attributes"
        ) from exc
    return f.getvalue()


def as_on_workers(net, drop=()):
    """The net as :func:`dump` and :func:`load` make it for the workers,
    built in this process without pickling: its parameters are ``net``'s
    own (shared, not copied), everything else that travels is a copy, and
    what stays on the client is an :class:`OnClient`.

    For running a worker's chunk on the client before any data is placed
    (:func:`dask_adadamp._prepare.check_chunks`). Unpickling the payload
    here instead would rebind the methods of the user's classes defined in
    ``__main__`` or a function (cloudpickle sets a known class's attributes
    from the pickle) to copies of what they refer to.

    >>> from skorch import NeuralNetRegressor
    >>> net = NeuralNetRegressor(torch.nn.Linear, module__in_features=1,
    ...                          module__out_features=1).initialize()
    >>> view = as_on_workers(net)
    >>> view.module_ is net.module_, view.module_.weight is net.module_.weight
    (False, True)
    >>> view.history_
    <history_: on the client>
    """
    state = copy.deepcopy(_travelling_state(net, drop),
                          {id(p): p for p in net_parameters(net)})
    view = type(net).__new__(type(net))
    vars(view).update(state)
    return view


def _travelling_state(net, drop):
    """The attributes of ``net`` that go to the workers, as they are (not
    copied), and an :class:`OnClient` for each of those that stay."""
    drop = CLIENT_ONLY | set(drop) | {name + "_" for name in net._optimizers}
    state = {k: v for k, v in vars(net).items() if k not in drop}
    # Methods replaced on the instance (a test's mock of net.score) stay
    # behind, but those a chunk calls.
    for name in [k for k in state if k not in WORKER_METHODS
                 and callable(getattr(type(net), k, None))]:
        del state[name]
    # What stays behind is named where a worker's infer or get_loss uses it.
    state.update((k, OnClient(type(net).__name__, k))
                 for k in vars(net) if k in drop)
    return state


class OnClient:
    """Stands in, on the workers' copy of a net, for an attribute that stays
    on the client (``history_``, ``callbacks_``, the optimizers, the
    client): using it raises a
    :class:`~dask_adadamp.exceptions.CustomizationError` that names it and
    the way around, where a bare ``AttributeError`` would name neither.

    >>> OnClient("MyNet", "history_").record_batch("a", 1)
    Traceback (most recent call last):
    ...
    dask_adadamp.exceptions.CustomizationError: MyNet.history_ (self.history) stays on the client: ...
    """

    __slots__ = ("owner", "name")

    def __init__(self, owner, name):
        self.owner, self.name = owner, name

    def __getattr__(self, attr):
        if attr.startswith("__"):  # copy and pickle look for hooks
            raise AttributeError(attr)
        self._refuse()

    def _refuse(self, *args, **kwargs):
        what = f"{self.owner}.{self.name}" + (
            " (self.history)" if self.name == "history_" else "")
        raise CustomizationError(
            f"{what} stays on the client: infer and get_loss run on the Dask "
            "workers, on each chunk of an update's rows, where the net's copy "
            "has its modules, criteria and plain attributes but not its "
            "history, callbacks, optimizers or client. Use it where it is: in "
            "a callback (on_batch_end runs on the client after every update, "
            "with the update's train_loss in net.history) or in a train_step "
            "override, which runs on the client")

    __getitem__ = __setitem__ = __iter__ = __len__ = __call__ = __contains__ = _refuse

    def __reduce__(self):
        return OnClient, (self.owner, self.name)

    def __repr__(self):
        return f"<{self.name}: on the client>"


def _picklable(value):
    try:
        cloudpickle.dumps(value)
    except Exception:
        return False
    return True


def load(payload, device):
    """The net :func:`dump` pickled, its parameters allocated on ``device``
    (their values arrive with every update) and its buffers restored."""
    cls, state = cloudpickle.loads(payload)
    net = cls.__new__(cls)  # no __init__: the state is the net's as it was
    vars(net).update(state)
    net.device = str(device)
    buffers = {k: b.detach().clone() for k, b in net_buffers(net).items()}
    seen = set()
    for attr, part in components(net).items():
        if isinstance(part, torch.nn.Module) and id(part) not in seen:
            seen.add(id(part))
            vars(net)[attr] = part.to_empty(device=device)
    set_buffers(net, {k: b.to(device) for k, b in buffers.items()})
    return net


def set_training(net, training):
    """skorch's ``net._set_training(training)``; with skorch's own method,
    skipped where every module and criterion is in that mode already (it
    walks every submodule: a tenth of a millisecond for a small MLP)."""
    if type(net)._set_training is not NeuralNet._set_training:
        net._set_training(training)
        return
    for part in components(net).values():
        if isinstance(part, torch.nn.Module) and part.training != training:
            part.train(training)


def is_mean_reduced(net):
    """Whether the net's loss is taken as a mean over the batch's examples:
    its criterion's ``reduction`` is anything but ``"sum"`` (``"none"``
    with a ``get_loss`` that reduces, as skorch's sample-weight recipe's
    ``(w * loss).mean()``), or it has none (a function). A fit checks
    this on its first rows (:func:`dask_adadamp._prepare.check_chunks`)."""
    return getattr(getattr(net, "criterion_", None), "reduction", "mean") != "sum"


def chunk_loss(net, X, y, fit_params, training, mean, n):
    """The loss of one chunk, as a sum over its examples.

    ``net.infer(X, **fit_params)`` and ``net.get_loss(y_pred, y, X=X,
    training=training)``, as in skorch's ``train_step_single`` and
    ``validation_step``. A mean (``mean``: the fit reads it from the net's
    ``get_loss``, :func:`dask_adadamp._prepare.check_chunks`) is
    multiplied by the chunk's examples, so that chunks of any size add up
    to the batch's: the sum of the chunks divided by the batch's examples
    is skorch's loss of the whole batch, a term that an overridden
    ``get_loss`` adds once per batch (an L2 penalty) included.
    """
    y_pred = net.infer(X, **fit_params)
    loss = net.get_loss(y_pred, y, X=X, training=training)
    return loss * n if mean else loss


class Rows:
    """Training rows with what goes with each row: X (a numpy array, a
    scipy.sparse matrix, densified per chunk as skorch's Dataset densifies
    each row, or a dict of arrays) and the fit parameters that hold one
    value per example.
    Indexing takes the same rows of all of them, so a shard of ``Rows`` is
    placed, moved and sliced per chunk like a shard of X.

    >>> import numpy as np, scipy.sparse
    >>> rows = Rows(scipy.sparse.eye(4, format="csr"), {"w": np.arange(4.0)})
    >>> X, params = rows[1:3].inputs()
    >>> X.tolist(), params["w"].tolist()
    ([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]], [1.0, 2.0])
    """

    def __init__(self, X, fit_params=None):
        self.X = X
        self.fit_params = dict(fit_params or {})

    def __getitem__(self, rows):
        X = ({k: v[rows] for k, v in self.X.items()} if isinstance(self.X, dict)
             else self.X[rows])
        return Rows(X, {k: v[rows] for k, v in self.fit_params.items()})

    def _arrays(self):
        return list(self.X.values()) if isinstance(self.X, dict) else [self.X]

    def __len__(self):
        return self._arrays()[0].shape[0]

    @property
    def shape(self):
        return self._arrays()[0].shape

    @property
    def dtype(self):
        return self._arrays()[0].dtype

    @property
    def nbytes(self):
        own = sum(X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
                  if hasattr(X, "indptr") else X.nbytes for X in self._arrays())
        return own + sum(v.nbytes for v in self.fit_params.values())

    def inputs(self):
        """``(X, fit_params)`` for ``net.infer``: X dense (a dict stays a
        dict)."""
        if isinstance(self.X, dict):
            return {k: _dense(v) for k, v in self.X.items()}, self.fit_params
        return _dense(self.X), self.fit_params


def _dense(X):
    return np.asarray(X.toarray() if hasattr(X, "toarray") else X)
