"""Reading a Dask net's history: its epochs, which rows are model updates,
and the counts that run across epochs.

Every model update is an entry of ``history[epoch]["batches"]`` with the
key ``"batch_size"``; skorch also records validation batches there, which
have no such key.
"""
from collections.abc import Mapping, Sequence


def epochs(history):
    """The list of epoch dicts of a skorch History, a list of epoch dicts, or
    a fitted estimator; a ValueError says what is wrong.

    >>> epochs([{"epoch": 1}])
    [{'epoch': 1}]
    >>> epochs("history")
    Traceback (most recent call last):
    ...
    ValueError: a history of type str is not accepted; pass a skorch History, a list of its epoch dicts or a fitted estimator
    """
    if not isinstance(history, Sequence) and hasattr(history, "history"):
        # skorch nets keep None in ``history`` until initialized.
        if history.history is None:
            raise ValueError(f"{type(history).__name__} has no history: fit it first, "
                             "or pass its history, a list of epoch dicts")
        history = history.history
    if (not isinstance(history, Sequence) or isinstance(history, str)
            or not all(isinstance(epoch, Mapping) for epoch in history)):
        raise ValueError(f"a history of type {type(history).__name__} is not accepted; "
                         "pass a skorch History, a list of its epoch dicts or a "
                         "fitted estimator")
    return list(history)


#: The keys that mark a row of ``history[epoch]["batches"]`` as a model
#: update: the Dask nets record ``batch_size`` for every update.
UPDATE_KEYS = ("batch_size",)


def is_update(row, keys=UPDATE_KEYS):
    """Whether a row of ``history[epoch]["batches"]`` is a model update
    (has one of ``keys``)."""
    return isinstance(row, Mapping) and any(key in row for key in keys)


def update_rows(epochs_, keys=UPDATE_KEYS):
    """The model updates of the given epochs, in order: their rows with one
    of ``keys`` (skorch's own nets record ``train_batch_size``).

    >>> update_rows([{"batches": [{"batch_size": 8}, {"valid_loss": 0.1}]}])
    [{'batch_size': 8}]
    """
    return [row for epoch in epochs_ for row in epoch.get("batches", ())
            if is_update(row, keys)]


def total(history, key):
    """A cumulative count (``model_updates``, ``n_examples``) as of the end
    of the previous epoch: the last value recorded before the current one.

    >>> total([{"model_updates": 3}, {"model_updates": 5}, {}], "model_updates")
    5
    """
    for row in reversed(history[:-1]):
        if key in row:
            return row[key]
    return 0
