"""What runs on the Dask workers: pure functions of (weights, shard, rows).

Nothing here imports the estimator. A worker's handler (see
:mod:`dask_adadamp.extension`) receives the model once per fit as a
:class:`ModelSpec` (a few kilobytes: the module's structure without its
weights), then with every update the weights as one flat float32 buffer and
the rows of the shards it holds, and returns sums. The same inputs give the same bits on any
worker, which is what makes updates independent of the cluster's size.
"""
import copy
import io
import threading
import time

import cloudpickle
import numpy as np
import torch
from torch.nn.utils import parameters_to_vector

# Models built on this worker process, by fit token. Building one costs a
# deserialization and an allocation; an update costs neither.
_MODELS = {}
_MODELS_LOCK = threading.Lock()
# Specs received by direct calls, by fit token (the model is built from one
# on the first chunk that needs it).
_SPECS = {}


class ModelSpec:
    """A module's structure and the loss it is trained with, minus weights.

    Parameters
    ----------
    token : str
        Names the fit; workers cache the built model under it.
    module : torch.nn.Module
        The initialized module. Its parameters are replaced by meta
        tensors before pickling, so the spec stays small whatever the
        model's size; buffers (e.g. batch-norm statistics) are kept.
    criterion : torch.nn.Module
        The initialized criterion.
    device : str
        Where the worker computes (``"cpu"``, ``"cuda"``, ...).
    log_input : bool
        Apply ``log`` to the module's output before the criterion, as
        skorch's classifier does for ``NLLLoss`` on probabilities.

    Examples
    --------
    >>> import torch
    >>> spec = ModelSpec("fit-0", torch.nn.Linear(3, 2),
    ...                  torch.nn.MSELoss(), "cpu")
    >>> module, criterion = spec.build()
    >>> module.weight.shape
    torch.Size([2, 3])
    """

    def __init__(self, token, module, criterion, device, log_input=False):
        self.token = token
        self.device = str(device)
        self.log_input = log_input
        buffers = {name: b.detach().cpu().clone()
                   for name, b in module.named_buffers()}
        # Pickle a copy whose parameters live on the meta device: only
        # structure travels; weights come with every update.
        skeleton = _meta_copy(module)
        f = io.BytesIO()
        cloudpickle.dump((skeleton, buffers, copy.deepcopy(criterion).cpu()), f)
        self.payload = f.getvalue()

    def build(self):
        """Return ``(module, criterion)`` on ``self.device``."""
        skeleton, buffers, criterion = cloudpickle.loads(self.payload)
        module = skeleton.to_empty(device=self.device)
        for name, value in buffers.items():
            _set_buffer(module, name, value.to(self.device))
        return module, criterion.to(self.device)


def _meta_copy(module):
    params = dict(module.named_parameters())
    # deepcopy with the parameters swapped for meta tensors, so the copy
    # never holds a second set of real weights.
    memo = {id(p): torch.nn.Parameter(torch.empty_like(p, device="meta"),
                                      requires_grad=p.requires_grad)
            for p in params.values()}
    return copy.deepcopy(module, memo)


def _set_buffer(module, name, value):
    *path, leaf = name.split(".")
    for part in path:
        module = getattr(module, part)
    module._buffers[leaf] = value


def _model(spec):
    with _MODELS_LOCK:
        entry = _MODELS.get(spec.token)
        if entry is None:
            module, criterion = spec.build()
            # One lock per model: calls on a multi-threaded worker
            # share the module's parameters and must not interleave.
            entry = (module, criterion, threading.Lock())
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

    Parameters
    ----------
    spec : ModelSpec
    weights : numpy.ndarray
        Flat float32 buffer of all parameters, in ``module.parameters()``
        order.
    buffers : dict of str to numpy.ndarray
        The module's buffers (batch-norm running statistics), or ``{}``.
    X, y : numpy.ndarray
        One shard of the training data.
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
    module, criterion, lock = _model(spec)
    device = spec.device
    with lock:
        params = (_params(module) if loaded
                  else _load(module, weights, buffers, device))
        xb = torch.as_tensor(_take(X, rows), device=device)
        yb = torch.as_tensor(_take(y, rows), device=device)
        _mode(module, True)
        _mode(criterion, True)
        for p in params:
            p.grad = None  # backward hands over fresh gradients, no add
        _seed(seed, device)
        out = module(xb)
        if spec.log_input:
            out = torch.log(out + torch.finfo(out.dtype).eps)
        loss = criterion(out, yb)
        # A mean-reduced criterion averages over the chunk; the reduction
        # needs sums so chunks of any size add up to the batch's mean.
        if getattr(criterion, "reduction", "mean") == "mean":
            loss = loss * len(rows)
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
                        for name, b in module.named_buffers()},)
        return result


def _seed(seed, device):
    """Seed the generators a forward pass on ``device`` draws from.

    ``torch.manual_seed`` would do, but it also visits every accelerator
    backend: 0.13 ms against 1.5 us, per chunk.
    """
    torch.default_generator.manual_seed(seed)
    if torch.device(device).type == "cuda":
        torch.cuda.manual_seed(seed)


def _mode(module, training):
    """``module.train(training)``, skipped when it is in that mode already
    (it walks every submodule: 0.14 ms a chunk for a small MLP)."""
    if module.training != training:
        module.train(training)


def _params(module):
    """The module's parameters, listed once per module (the list is the same
    every update; walking the submodules for it is not free)."""
    params = module.__dict__.get("_adadamp_params")
    if params is None:
        params = module.__dict__["_adadamp_params"] = list(module.parameters())
    return params


def _take(array, rows):
    """``array[rows]``; a slice, not a copy, when the rows are consecutive."""
    rows = np.asarray(rows)
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and (
            len(rows) == 1 or (np.diff(rows) == 1).all()):
        return array[rows[0]:rows[-1] + 1]
    return array[rows]


def _load(module, weights, buffers, device):
    """Copy the flat weights and the buffers into ``module``; return its
    parameters."""
    params = _params(module)
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
            module.get_buffer(name).copy_(torch.from_numpy(value))
    return params


def shards_loss(spec, weights, buffers, shards, rows):
    """For each shard, the sum of per-example losses over its ``rows``.

    Forward only, with the module in eval mode (no dropout, batch norm
    from its running statistics): the training objective at ``weights``.

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
    module, criterion, lock = _model(spec)
    device = spec.device
    sums = []
    with lock, torch.no_grad():
        _load(module, weights, buffers, device)
        _mode(module, False)
        for (X, y), r in zip(shards, rows):
            out = module(torch.as_tensor(_take(X, r), device=device))
            if spec.log_input:
                out = torch.log(out + torch.finfo(out.dtype).eps)
            loss = criterion(out, torch.as_tensor(_take(y, r), device=device))
            if getattr(criterion, "reduction", "mean") == "mean":
                loss = loss * len(r)
            sums.append(float(loss))
    return sums


def identity(x):
    """Return ``x``: a task whose result is data it carries (a shard)."""
    return x


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
