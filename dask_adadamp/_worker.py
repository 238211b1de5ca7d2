"""What runs on the Dask workers: pure functions of (weights, shard, rows).

Nothing here imports the estimator. A worker's handler (see
:mod:`dask_adadamp._extension`) receives the fit's net once as a
:class:`ModelSpec` (a few kilobytes: the net's class, modules and criteria
without their weights, see :mod:`dask_adadamp._netcopy`; unpickling it
imports the net's class), then with every update the weights as one flat float32 buffer and
the rows of the shards it holds, and returns sums. The same inputs give the same bits on any
worker, which is what makes updates independent of the cluster's size.
"""
import threading
import time

import numpy as np
import torch
from torch.nn.utils import parameters_to_vector

from . import _netcopy as netcopy

# Models built on this worker process, by fit token. Building one costs a
# deserialization and an allocation; an update costs neither.
_MODELS = {}
_MODELS_LOCK = threading.Lock()
# Specs received by direct calls, by fit token (the model is built from one
# on the first chunk that needs it).
_SPECS = {}


class ModelSpec:
    """What the workers compute with in one fit: the net without its weights.

    Parameters
    ----------
    token : str
        Names the fit; workers cache the built net under it.
    net : skorch.NeuralNet or torch.nn.Module
        The initialized net: its class, modules, criteria and plain
        attributes travel (see :mod:`dask_adadamp._netcopy`), with the
        parameters on the meta device, so the spec stays small whatever
        the model's size; buffers (e.g. batch-norm statistics) are kept.
        A torch module with ``criterion`` is trained as skorch's plain
        ``NeuralNet(module, criterion=criterion)`` would.
    criterion : torch.nn.Module or None
        Only with a module as ``net``.
    device : str
        Where the worker computes (``"cpu"``, ``"cuda"``, ...).
    fit_params : dict or None
        Fit parameters passed as they are to every chunk's ``infer`` (those
        with one value per example travel with the data instead:
        :class:`dask_adadamp._netcopy.Rows`).
    drop : iterable of str
        Attributes of the net that stay on the client.

    Attributes
    ----------
    mean : bool or None
        Whether each chunk's loss is a mean over its rows (True: weighted by
        them) or a sum (False: added as it is), from the criterion's
        ``reduction`` (:func:`dask_adadamp._netcopy.is_mean_reduced`); a fit
        sets it from the net's ``get_loss`` on its first rows
        (:func:`dask_adadamp._prepare.check_chunks`), None where the loss is
        neither (only an update of one chunk is then computed, its loss as
        it is).
    why : str or None
        With ``mean`` None, why (for the error that refuses an update of
        several chunks).

    Examples
    --------
    >>> import torch
    >>> spec = ModelSpec("fit-0", torch.nn.Linear(3, 2),
    ...                  torch.nn.MSELoss(), "cpu")
    >>> net = spec.build()
    >>> net.module_.weight.shape
    torch.Size([2, 3])
    """

    def __init__(self, token, net, criterion=None, device="cpu",
                 fit_params=None, drop=()):
        if criterion is not None:
            from skorch import NeuralNet
            net = NeuralNet(net, criterion=criterion, device=None).initialize()
        self.token = token
        self.device = str(device)
        self.fit_params = dict(fit_params or {})
        self.mean = netcopy.is_mean_reduced(net)
        self.why = None
        self.payload = netcopy.dump(net, drop)

    def build(self):
        """Return the net, its parameters allocated on ``self.device``."""
        return netcopy.load(self.payload, self.device)


def _model(spec):
    with _MODELS_LOCK:
        entry = _MODELS.get(spec.token)
        if entry is None:
            net = spec.build()
            # One lock per model: calls on a multi-threaded worker
            # share the net's parameters and must not interleave. The
            # parameter and buffer lists are the same every update
            # (walking the modules for them is not free).
            entry = (net, netcopy.net_parameters(net), netcopy.net_buffers(net),
                     threading.Lock())
            _MODELS[spec.token] = entry
        return entry


def remember(spec):
    """Keep a fit's model spec on this worker (its first direct call)."""
    _SPECS[spec.token] = spec


def knows(token):
    """Whether this worker has the spec of fit ``token``."""
    return token in _SPECS


def spec_of(token):
    """The spec :func:`remember` kept for fit ``token``."""
    return _SPECS[token]


def forget(token):
    """Drop the model a fit built on this worker (called when it ends)."""
    _SPECS.pop(token, None)
    with _MODELS_LOCK:
        _MODELS.pop(token, None)


def chunk_gradient(spec, weights, buffers, X, y, rows, seed,
                   return_buffers=False, sq_norm=True, loaded=False):
    """Sum of per-example gradients and losses over ``rows`` of one shard.

    skorch's ``train_step_single`` on the fit's net: every module and
    criterion in training mode, ``net.infer`` and ``net.get_loss`` (see
    :func:`dask_adadamp._netcopy.chunk_loss` for the sum).

    Parameters
    ----------
    spec : ModelSpec
    weights : numpy.ndarray
        Flat float32 buffer of all parameters of the net's modules and
        criteria, in :func:`dask_adadamp._netcopy.net_parameters` order.
    buffers : dict of str to numpy.ndarray
        The buffers (batch-norm running statistics) by
        :func:`dask_adadamp._netcopy.net_buffers` name, or ``{}``.
    X, y : numpy.ndarray
        One shard of the training data; X may be a
        :class:`dask_adadamp._netcopy.Rows` (sparse X, per-example fit
        parameters).
    rows : numpy.ndarray of int
        The shard's rows this chunk uses.
    seed : int
        Seeds randomness in the forward pass (dropout), so a re-run
        chunk gives the same result.
    return_buffers : bool
        Also return the buffers as the forward pass left them.
    sq_norm : bool
        Compute ``sq_norm`` (a float64 pass over the gradient that only
        :class:`~dask_adadamp.dampers.NoiseScaleDamp` reads); else it is
        None.
    loaded : bool
        The module already holds ``weights`` (an earlier chunk of the same
        call loaded them): skip the copy.

    Returns
    -------
    grad_sum : numpy.ndarray
        Flat float32 sum of the per-example gradients.
    loss_sum : float
        Sum of the per-example losses.
    count : int
        ``len(rows)``.
    sq_norm : float or None
        Squared norm of the chunk's mean gradient (for the gradient noise
        scale, see :class:`dask_adadamp.dampers.NoiseScaleDamp`).
    buffers : dict of str to numpy.ndarray
        Only with ``return_buffers``.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from torch.nn.utils import parameters_to_vector
    >>> module = torch.nn.Linear(2, 1)
    >>> spec = ModelSpec("doc", module, torch.nn.MSELoss(), "cpu")
    >>> w = parameters_to_vector(module.parameters()).detach().numpy()
    >>> X = np.ones((4, 2), dtype="float32"); y = np.zeros((4, 1), "float32")
    >>> g, loss, n, sq = chunk_gradient(spec, w, {}, X, y, np.arange(4), seed=0)
    >>> g.shape, n
    ((3,), 4)
    """
    net, params, own_buffers, lock = _model(spec)
    device = spec.device
    with lock:
        if not loaded:
            _load(params, own_buffers, weights, buffers)
            # skorch's train_step_single: every module and criterion in
            # training mode (after a loss evaluation left them in eval).
            netcopy.set_training(net, True)
        xb, fit_params = _inputs(spec, _take(X, rows))
        yb = torch.as_tensor(_take(y, rows), device=device)
        for p in params:
            p.grad = None  # backward hands over fresh gradients, no add
        _seed(seed, device)
        loss = netcopy.chunk_loss(net, xb, yb, fit_params, True, spec.mean,
                                  len(rows))
        loss.backward()
        # One copy into a flat buffer. Measured: cheaper than pointing the
        # gradients into one buffer beforehand, where backward adds into it.
        grad = parameters_to_vector(
            [p.grad if p.grad is not None else torch.zeros_like(p)
             for p in params]).detach()
        for p in params:
            p.grad = None
        norm = None
        if sq_norm:
            mean = grad.double() / len(rows)
            norm = float(mean @ mean)
        result = (grad.cpu().numpy(), float(loss.detach()), len(rows), norm)
        if return_buffers:
            result += ({name: b.detach().cpu().numpy().copy()
                        for name, b in own_buffers.items()},)
        return result


def _seed(seed, device):
    """Seed the generators a forward pass on ``device`` draws from.

    ``torch.manual_seed`` would do, but it also visits every accelerator
    backend: 0.13 ms against 1.5 us, per chunk.
    """
    torch.default_generator.manual_seed(seed)
    if torch.device(device).type == "cuda":
        torch.cuda.manual_seed(seed)


def _take(array, rows):
    """``array[rows]``; a slice, not a copy, when the rows are consecutive."""
    rows = np.asarray(rows)
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and (
            len(rows) == 1 or (np.diff(rows) == 1).all()):
        return array[rows[0]:rows[-1] + 1]
    return array[rows]


def _load(params, own_buffers, weights, buffers):
    """Copy the flat weights into ``params`` and ``buffers`` (by name) into
    ``own_buffers``."""
    flat = torch.from_numpy(weights)
    offset = 0
    with torch.no_grad():
        # Copied into the parameters' own storage, never viewed in place
        # (as vector_to_parameters does): the weights arrive at whatever
        # alignment the message left them, and some CPU kernels (a one-row
        # matrix-vector product) round differently at other alignments.
        for p in params:
            n = p.numel()
            p.copy_(flat[offset:offset + n].view_as(p))
            offset += n
        for name, value in buffers.items():
            own_buffers[name].copy_(torch.from_numpy(value))


def _inputs(spec, X):
    """``(X as a tensor on the spec's device, fit parameters)`` of a
    chunk's rows: X itself, or :class:`~dask_adadamp._netcopy.Rows` with the
    rows' own fit parameters, after those every chunk gets."""
    fit_params = spec.fit_params
    if isinstance(X, netcopy.Rows):
        X, own = X.inputs()
        fit_params = {**fit_params, **own}
    if isinstance(X, dict):  # skorch's infer passes the items as keywords
        return {k: torch.as_tensor(v, device=spec.device)
                for k, v in X.items()}, fit_params
    return torch.as_tensor(X, device=spec.device), fit_params


def shards_loss(spec, weights, buffers, shards, rows):
    """For each shard, the sum of per-example losses over its ``rows``.

    Forward only, in skorch's ``validation_step`` mode (modules and
    criteria in eval mode: no dropout, batch norm from its running
    statistics): the training objective at ``weights``.

    Parameters
    ----------
    spec, weights, buffers
        As for :func:`chunk_gradient`.
    shards : list of (X, y)
    rows : list of numpy.ndarray of int

    Examples
    --------
    >>> import numpy as np, torch
    >>> module = torch.nn.Linear(2, 1)
    >>> spec = ModelSpec("doc-loss", module, torch.nn.MSELoss(), "cpu")
    >>> w = np.zeros(3, "float32")
    >>> X = np.ones((4, 2), "float32"); y = np.full((4, 1), 2.0, "float32")
    >>> shards_loss(spec, w, {}, [(X, y), (X, y)], [np.arange(3), np.arange(1)])
    [12.0, 4.0]
    """
    net, params, own_buffers, lock = _model(spec)
    device = spec.device
    sums = []
    with lock, torch.no_grad():
        _load(params, own_buffers, weights, buffers)
        netcopy.set_training(net, False)  # skorch's validation_step
        for (X, y), r in zip(shards, rows):
            xb, fit_params = _inputs(spec, _take(X, r))
            yb = torch.as_tensor(_take(y, r), device=device)
            # A loss that is neither a mean nor a sum is taken as a mean
            # here: the schedule's reading of it, not a gradient.
            sums.append(float(netcopy.chunk_loss(
                net, xb, yb, fit_params, False, spec.mean is not False, len(r))))
    return sums


def has_device(device):
    """Whether this worker process can compute on ``device``."""
    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError):
        return False
    return True


def compute_call(spec, weights, buffers, chunks, losses, sq_norms):
    """One update's share of a worker: gradients of its chunks, losses of
    its evaluation rows, all at one set of weights.

    Parameters
    ----------
    spec, weights, buffers
        As for :func:`chunk_gradient`.
    chunks : list of (int, X, y, rows, seed, return_buffers)
        Chunk number in the update, its shard's arrays, rows and seed.
    losses : list of (int, X, y, rows)
        Evaluation item number, shard arrays and rows, forward only.
    sq_norms : bool
        Compute each chunk's squared gradient norm.

    Returns
    -------
    dict
        ``chunks``: ``{j: chunk_gradient's tuple}``; ``losses``: ``{i: loss
        sum}``; ``compute_s``: seconds spent computing.

    Examples
    --------
    >>> import numpy as np, torch
    >>> spec = ModelSpec("doc-call", torch.nn.Linear(2, 1), torch.nn.MSELoss(), "cpu")
    >>> X = np.ones((4, 2), "float32"); y = np.zeros((4, 1), "float32")
    >>> out = compute_call(spec, np.zeros(3, "float32"), {},
    ...                    [(0, X, y, np.arange(2), 0, False)],
    ...                    [(0, X, y, np.arange(4))], sq_norms=False)
    >>> out["chunks"][0][2], out["losses"][0]
    (2, 0.0)
    """
    start = time.perf_counter()
    out = {}
    for n, (j, X, y, rows, seed, return_buffers) in enumerate(chunks):
        out[j] = chunk_gradient(spec, weights, buffers, X, y, rows, seed,
                                return_buffers=return_buffers,
                                sq_norm=sq_norms, loaded=n > 0)
    losses = ({i: s for (i, *_), s in zip(losses, shards_loss(
        spec, weights, buffers, [(X, y) for _, X, y, _ in losses],
        [rows for *_, rows in losses]))} if losses else {})
    return {"chunks": out, "losses": losses,
            "compute_s": time.perf_counter() - start}
