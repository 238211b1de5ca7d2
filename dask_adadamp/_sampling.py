"""The order in which an epoch visits the training examples (client side).

An epoch is a seeded permutation of all training examples, built so that
every chunk of an update reads one shard only: each shard's rows are
shuffled and cut into *pieces* of at most ``grads_per_worker`` rows, and the
epoch deals pieces round by round, one from each shard in shard order, until
every shard is used up. Updates take consecutive pieces (splitting the last
one where the batch ends). A chunk is then one piece or part of one, so its
gradient is computed where its shard lives and only row numbers travel
with the call; and consecutive chunks read consecutive shards, which the
engine places on consecutive workers, so an update keeps every worker busy.

Numpy data is shuffled before it is cut into shards, so each update is a
sample stratified over shards. Everything depends on the shard sizes,
``grads_per_worker``, the batch sizes asked for and the seed; nothing on the
workers.
"""
from collections import deque
from typing import NamedTuple

import numpy as np

from .exceptions import CustomizationError


class Chunk(NamedTuple):
    """Rows of one shard whose gradients are computed together."""

    shard: int
    rows: np.ndarray


class _UpdateFields(NamedTuple):
    indices: np.ndarray  # global example numbers, for callbacks and history
    chunks: list


class Update(_UpdateFields):
    """The examples of one model update, cut into chunks: the batch that a
    Dask net's ``train_step`` and ``train_step_single`` get.

    Its rows stay on the workers, so it is not ``(X, y)``: unpacking it as
    skorch's ``unpack_data(batch)`` does raises a
    :class:`~dask_adadamp.exceptions.CustomizationError` that says what
    runs where, rather than handing row numbers to the module.

    >>> update = Update(np.arange(3), [Chunk(0, np.arange(3))])
    >>> len(update), update.indices.tolist()
    (3, [0, 1, 2])
    >>> X, y = update
    Traceback (most recent call last):
    ...
    dask_adadamp.exceptions.CustomizationError: the batch of a Dask net's training step is an Update ...
    """

    __slots__ = ()

    def __len__(self):
        return len(self.indices)

    def __iter__(self):
        raise CustomizationError(
            "the batch of a Dask net's training step is an Update (the "
            "numbers of its rows, .indices, and the chunks they are cut into "
            "on the workers), not (X, y): the rows stay on the workers, so a "
            "train_step or train_step_single that computes on the batch's "
            "tensors cannot run on the client. Override infer or get_loss "
            "instead (they run on the workers, on each chunk of the update), "
            "or call super().train_step_single(batch, **fit_params), which "
            "adds the update's gradient to .grad, and work with .grad after it")

    def __getnewargs__(self):  # pickling and copying without __iter__
        return tuple.__getitem__(self, 0), tuple.__getitem__(self, 1)


class EpochSampler:
    """Cut one epoch of examples into updates of the sizes asked for.

    Parameters
    ----------
    shard_ids : list of numpy.ndarray
        For each shard, the global example number of each of its rows.
    grads_per_worker : int
        Most rows a chunk may have.
    rng : numpy.random.Generator
        Seeds the epoch's permutation.

    Examples
    --------
    >>> import numpy as np
    >>> ids = [np.arange(0, 6), np.arange(6, 10)]
    >>> epoch = EpochSampler(ids, grads_per_worker=3,
    ...                      rng=np.random.default_rng(0))
    >>> first = epoch.take(5)
    >>> len(first), [(c.shard, len(c.rows)) for c in first.chunks]
    (5, [(0, 3), (1, 2)])
    >>> sum(len(u) for u in [first, epoch.take(5)]), epoch.remaining
    (10, 0)
    """

    def __init__(self, shard_ids, grads_per_worker, rng):
        self.shard_ids = shard_ids
        per_shard = []
        for ids in shard_ids:
            order = rng.permutation(len(ids))
            per_shard.append([order[i:i + grads_per_worker]
                              for i in range(0, len(ids), grads_per_worker)])
        self._pieces = deque(
            Chunk(shard, pieces[r])
            for r in range(max(map(len, per_shard), default=0))
            for shard, pieces in enumerate(per_shard) if r < len(pieces))
        self.remaining = sum(len(ids) for ids in shard_ids)

    def take(self, batch_size, min_chunks=1):
        """The next update of at most ``batch_size`` examples, or None.

        The update is cut into at least ``min_chunks`` chunks where it has
        that many examples (the largest chunk is halved until it is).

        >>> epoch = EpochSampler([np.arange(8)], 4, np.random.default_rng(0))
        >>> [len(c.rows) for c in epoch.take(4, min_chunks=2).chunks]
        [2, 2]
        """
        if not self._pieces:
            return None
        chunks, need = [], batch_size
        while need and self._pieces:
            piece = self._pieces.popleft()
            if len(piece.rows) > need:
                self._pieces.appendleft(Chunk(piece.shard, piece.rows[need:]))
                piece = Chunk(piece.shard, piece.rows[:need])
            chunks.append(piece)
            need -= len(piece.rows)
        while len(chunks) < min(min_chunks, batch_size - need):
            j = max(range(len(chunks)), key=lambda i: len(chunks[i].rows))
            shard, rows = chunks[j]
            half = (len(rows) + 1) // 2
            chunks[j:j + 1] = [Chunk(shard, rows[:half]), Chunk(shard, rows[half:])]
        indices = np.concatenate(
            [self.shard_ids[c.shard][c.rows] for c in chunks])
        self.remaining -= len(indices)
        return Update(indices, chunks)
