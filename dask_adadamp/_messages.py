"""The messages of the dashboard page: their schema, checks and JSON.

A :class:`~dask_adadamp.dashboard.FitMonitor` sends its fit's progress with
``client.log_event("adadamp", msg)``, and the scheduler hands every such
message to the :class:`~dask_adadamp.dashboard.DashboardPlugin`. Any client
can send anything under that topic, so the plugin keeps only what
:func:`check` accepts: a message of the schema below, within the limits
below, with every number finite or None. Pure functions, no Dask: the
plugin, the tests and the docs share them.

A message is a dict::

    {"fit": str, "kind": "start" | "updates" | "epoch" | "end",
     "name": str, "info": {str: scalar}, "client": str | None,   # start
     "updates": {column: [number | None, ...]},                    # any kind
     "epochs": {column: [number | None, ...]},
     "workers": {address: {"calls": int, "compute_ms": number | None,
                           "comm_ms": number | None}},
     "signal_name": str | None,
     "status": "finished" | "failed"}                              # end

Every field but ``fit`` and ``kind`` is optional; no other field is taken.
The limits bound what one message can hold before any value is read, so
refusing a message of 10^6 rows costs as little as refusing one of 10^4.
"""
import json
import math
import numbers

TOPIC = "adadamp"
KINDS = ("start", "updates", "epoch", "end")
STATUSES = ("finished", "failed")
# "epochs": epochs done at the end of the update, fractional (the x axis of
# the page's "epochs" view); "epoch": the epoch the update belongs to.
#
# The resource bill (every column optional, as all are: a message without
# them is taken, its rows get None):
# "workers_wanted": workers the update's batch needs; "workers_asked": the
# size the cluster was asked for; "workers_present": workers in the cluster
# during the update; "n_workers": workers the update used; "worker_s":
# worker-seconds held during the update (present x its wall-clock seconds);
# "worker_s_total": the same summed over the fit so far (the monitor adds
# it, so thinning the rows keeps it right); "short": 1 if the update ran on
# fewer workers than it wanted, else 0.
UPDATE_COLUMNS = ("update", "epoch", "epochs", "time", "batch_size", "lr",
                  "n_workers", "loss", "examples_per_s", "signal",
                  "compute_ms", "comm_ms",
                  "workers_wanted", "workers_asked", "workers_present",
                  "worker_s", "worker_s_total", "short")
# Per epoch: "worker_s", worker-seconds held; "updates_short", updates run
# short of workers; "scale_ups", scale-ups completed, and their lags from
# request to arrival in seconds: "scale_lag_s" (mean) and
# "scale_lag_max_s" (the longest).
EPOCH_COLUMNS = ("epoch", "model_updates", "train_loss", "valid_loss", "dur",
                 "worker_s", "updates_short", "scale_ups", "scale_lag_s",
                 "scale_lag_max_s")
WORKER_FIELDS = ("calls", "compute_ms", "comm_ms")
FIELDS = frozenset({"fit", "kind", "name", "info", "client", "updates",
                    "epochs", "workers", "signal_name", "status"})

MAX_ID_CHARS = 64      # fit and client ids (a fit's is 32 hex digits)
MAX_NAME_CHARS = 200   # the fit's name
MAX_TEXT_CHARS = 200   # an info value, a worker's address
MAX_KEY_CHARS = 64     # an info key, signal_name
MAX_INFO_ITEMS = 32
MAX_WORKERS = 1024     # workers of one fit
# Rows per table in one message. A monitor sends about every 0.5 s, so a
# message carries tens of rows; it sends early rather than pass this.
MAX_MESSAGE_ROWS = 2000
# What one message may weigh, bounded from lengths alone: 9 bytes a number
# (msgpack's most), the longest allowed text for each info item and worker.
# The largest a monitor sends (2000 rows of every column of both tables,
# 1024 workers, 32 info items) is about 0.75 MB by this count.
MAX_MESSAGE_BYTES = 2**20
NUMBER_BYTES = 9
_INT_LIMIT = 2**63  # msgpack's; larger ints come only from a direct call


class Refused(ValueError):
    """A message the plugin does not take; the text says why."""


def check(msg):
    """The message ``msg`` as the plugin stores it, or raise :class:`Refused`.

    Containers are measured (``len``) before any value is read; values are
    then checked one by one. Numbers come back as int or float, with NaN
    and infinities as None (JSON has no NaN; the plots show a gap).

    Parameters
    ----------
    msg : object
        What arrived under the topic ``"adadamp"``.

    Returns
    -------
    dict
        A new dict of the message's fields, every one checked; ``updates``
        and ``epochs`` are ``{column: list}`` with columns of one length.

    Raises
    ------
    Refused
        The reason, short, e.g. ``"updates: 1000000 rows, more than 2000"``.

    Examples
    --------
    >>> check({"fit": "f1", "kind": "updates",
    ...        "updates": {"update": [1, 2], "loss": [0.5, float("nan")]}})
    {'fit': 'f1', 'kind': 'updates', 'updates': {'update': [1, 2], 'loss': [0.5, None]}}
    >>> try:
    ...     check({"fit": "f1", "kind": "start", "info": "not a dict"})
    ... except Refused as e:
    ...     print(e)
    info: a str, not a dict
    """
    if type(msg) is not dict:
        raise Refused(f"a {type(msg).__name__}, not a dict")
    if not msg.keys() <= FIELDS:
        extra = sorted(str(k)[:MAX_KEY_CHARS] for k in msg.keys() - FIELDS)[:5]
        raise Refused(f"unknown fields {extra}")
    out = {"fit": _text(msg.get("fit"), "fit", MAX_ID_CHARS)}
    if not out["fit"]:
        raise Refused("fit: empty")
    kind = msg.get("kind")
    if kind not in KINDS:
        raise Refused(f"kind: not one of {KINDS}")
    out["kind"] = kind
    # Sizes first, from lengths only: the byte count bounds the work below.
    tables = {name: _table_shape(msg.get(name), name, columns)
              for name, columns in (("updates", UPDATE_COLUMNS),
                                    ("epochs", EPOCH_COLUMNS))
              if msg.get(name) is not None}
    info, workers = msg.get("info"), msg.get("workers")
    _check_container(info, "info", MAX_INFO_ITEMS)
    _check_container(workers, "workers", MAX_WORKERS)
    size = sum(n_values for _, n_values in tables.values()) * NUMBER_BYTES
    size += (MAX_KEY_CHARS + MAX_TEXT_CHARS) * len(info or ())
    size += (MAX_TEXT_CHARS + 3 * NUMBER_BYTES) * len(workers or ())
    if size > MAX_MESSAGE_BYTES:
        raise Refused(f"{size} bytes, more than {MAX_MESSAGE_BYTES}")

    for name, limit in (("name", MAX_NAME_CHARS), ("client", MAX_ID_CHARS),
                        ("signal_name", MAX_KEY_CHARS),
                        ("status", MAX_KEY_CHARS)):
        if msg.get(name) is not None:
            out[name] = _text(msg[name], name, limit)
    if out.get("status") not in (None, *STATUSES):
        raise Refused(f"status: not one of {STATUSES}")
    if info is not None:
        out["info"] = {_text(k, "info key", MAX_KEY_CHARS):
                       _scalar(v, "info value") for k, v in info.items()}
    for name in tables:
        out[name] = {column: _numbers(values, f"{name}[{column!r}]")
                     for column, values in msg[name].items()}
    if workers is not None:
        out["workers"] = {_text(a, "worker", MAX_TEXT_CHARS): _worker(w)
                          for a, w in workers.items()}
    return out


def _text(value, what, limit):
    if type(value) is not str:
        raise Refused(f"{what}: a {type(value).__name__}, not a str")
    if len(value) > limit:
        raise Refused(f"{what}: {len(value)} characters, more than {limit}")
    return value


def _check_container(value, what, limit):
    if value is None:
        return
    if type(value) is not dict:
        raise Refused(f"{what}: a {type(value).__name__}, not a dict")
    if len(value) > limit:
        raise Refused(f"{what}: {len(value)} items, more than {limit}")


def _table_shape(table, what, columns):
    """``(rows, values)`` of a ``{column: list}`` table, from lengths only."""
    _check_container(table, what, len(columns))
    lengths = set()
    for column, values in table.items():
        if column not in columns:
            raise Refused(f"{what}: unknown column {str(column)[:MAX_KEY_CHARS]!r}")
        if type(values) not in (list, tuple):
            raise Refused(f"{what}[{column!r}]: a {type(values).__name__}, "
                          "not a list")
        lengths.add(len(values))
    rows = max(lengths, default=0)
    if rows > MAX_MESSAGE_ROWS:
        raise Refused(f"{what}: {rows} rows, more than {MAX_MESSAGE_ROWS}")
    if len(lengths) > 1:
        raise Refused(f"{what}: columns of different lengths")
    return rows, rows * len(table)


def _number(value, what):
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if value is None or (kind is int and -_INT_LIMIT <= value < _INT_LIMIT):
        return value
    raise Refused(f"{what}: a {kind.__name__}, not a number")


def _numbers(values, what):
    # The one loop over rows: kept lean (about 0.1 us a value).
    out = []
    append, isfinite = out.append, math.isfinite
    for value in values:
        kind = type(value)
        if kind is float:
            append(value if isfinite(value) else None)
        elif value is None or (kind is int and -_INT_LIMIT <= value < _INT_LIMIT):
            append(value)
        else:
            raise Refused(f"{what}: a {kind.__name__}, not a number")
    return out


def _scalar(value, what):
    if type(value) is str:
        return _text(value, what, MAX_TEXT_CHARS)
    if type(value) is bool:
        return value
    return _number(value, what)


def _worker(stats):
    if type(stats) is not dict or not stats.keys() <= set(WORKER_FIELDS):
        raise Refused("workers: each a dict of " + ", ".join(WORKER_FIELDS))
    return {k: _number(v, f"workers {k}") for k, v in stats.items()}


def dumps(doc):
    """``doc`` as JSON text; never raises.

    The plugin stores only checked values, so the first, plain
    ``json.dumps`` nearly always works. Where it does not (a NaN, bytes, a
    key that is not a string, a cycle), the document is cleaned first
    (non-finite floats to null, other objects to their ``str``), and if
    even that fails the answer is an empty document with the error.

    Examples
    --------
    >>> dumps({"fits": [{"loss": [1.5, float("nan")], "name": b"n\\xff"}]})
    '{"fits": [{"loss": [1.5, null], "name": "n\\\\ufffd"}]}'
    """
    try:
        return json.dumps(doc, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        pass
    try:
        return json.dumps(_clean(doc), allow_nan=False)
    except Exception as e:  # noqa: BLE001 - the endpoint must answer
        return json.dumps({"fits": [], "error": type(e).__name__})


def _clean(value, depth=0):
    """A JSON-safe copy of ``value`` (cycles and deep nesting cut at 32)."""
    kind = type(value)
    if value is None or kind in (str, int, bool):
        return value
    if kind is float:
        return value if math.isfinite(value) else None
    if depth > 32:
        return None
    if isinstance(value, dict):
        return {_key(k): _clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v, depth + 1) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value[:MAX_TEXT_CHARS]).decode("utf-8", "replace")
    if isinstance(value, numbers.Real):  # numpy scalars
        return _clean(float(value), depth)
    return _key(value)


def _key(value):
    if type(value) is str:
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value[:MAX_TEXT_CHARS]).decode("utf-8", "replace")
    try:
        return str(value)[:MAX_TEXT_CHARS]
    except Exception:  # noqa: BLE001 - a __str__ that raises
        return type(value).__name__
