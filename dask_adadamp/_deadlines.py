"""How long a call to a worker may take: the deadlines of a fit's calls.

A worker can be there and answer nothing (a stopped process, a hung
machine): its sockets stay open, and distributed's ``send_recv`` waits on a
read with no timeout, until the scheduler's ``worker-ttl`` (300 s) drops it.
Each of a fit's calls therefore has a deadline derived from the fit's own
calls (:class:`Deadlines`, dask config ``adadamp.call-timeout``); a call
past it is given up (:func:`within_deadlines`) while the cluster is
otherwise moving, and its worker counts as stalled.
"""
import asyncio
import time
from collections import deque

import dask
from dask.utils import parse_timedelta

from ._shards import recover_timeout

#: A call's deadline, ``adadamp.call-timeout="auto"``: this floor plus this
#: factor times the slowest seconds per row of the fit's recent calls, times
#: the rows of the call. A call that carries the model (a worker's first)
#: or comes before any was timed gets the first-call deadline.
CALL_TIMEOUT_FLOOR = 5.0
CALL_TIMEOUT_FACTOR = 10
FIRST_CALL_TIMEOUT = 30.0
#: Calls whose seconds per row the deadline reads.
RECENT_CALLS = 32


def call_timeout():
    """The ``adadamp.call-timeout`` dask config value: ``"auto"`` or seconds.

    >>> import dask
    >>> with dask.config.set({"adadamp.call-timeout": "5s"}):
    ...     call_timeout()
    5.0
    >>> call_timeout()
    'auto'
    """
    value = dask.config.get("adadamp.call-timeout")
    if value == "auto":
        return value
    try:
        seconds = float(parse_timedelta(value, default="s"))
    except (TypeError, ValueError, KeyError):
        seconds = float("nan")
    if not seconds > 0:
        raise ValueError(
            f"dask config 'adadamp.call-timeout'={value!r} is not accepted; give "
            "'auto' (derived from the fit's own calls), or a positive duration "
            "such as 10 or '10s'")
    return seconds


class Deadlines:
    """The deadlines of one fit's calls, from what its calls took.

    Examples
    --------
    >>> deadlines = Deadlines()
    >>> deadlines.of(rows=64)  # nothing timed yet
    30.0
    >>> deadlines.answered(seconds=0.032, rows=64)
    >>> deadlines.of(rows=64), deadlines.of(rows=64, carries_model=True)
    (5.32, 30.0)
    """

    def __init__(self):
        call_timeout()  # a bad value is refused before any cluster work
        self.rates = deque(maxlen=RECENT_CALLS)
        self.answered_at = None  # time.monotonic() of the last answer

    def answered(self, seconds, rows, carried_model=False):
        """A call of ``rows`` rows answered in ``seconds``."""
        self.answered_at = time.monotonic()
        # A worker's first call builds the model: not a measure of the rest.
        if rows and not carried_model:
            self.rates.append(seconds / rows)

    def of(self, rows, carries_model=False):
        """Seconds a call of ``rows`` rows (gradient and loss) may take
        before its worker counts as stalled.

        With ``adadamp.call-timeout="auto"`` (the default): ``5 s + 10 x``
        the slowest seconds per row of the fit's last 32 calls ``x rows``,
        or 30 s for a call that carries the model (a worker's first, which
        builds it) or comes before any call was timed. A number (or
        ``"10s"``) is that many seconds for every call.
        """
        value = call_timeout()
        if value != "auto":
            return value
        if carries_model or not self.rates:
            return FIRST_CALL_TIMEOUT
        return round(CALL_TIMEOUT_FLOOR + CALL_TIMEOUT_FACTOR * max(self.rates) * rows, 6)


#: Seconds between two looks at the scheduler's events while calls wait.
WATCH_S = 0.05


async def within_deadlines(tasks, deadlines, answered_at=None, gone=None):
    """Await the calls ``tasks`` (task -> address); a call past its
    deadline is cancelled and reported ``"stalled"``, but only where the
    cluster is otherwise moving: another call of the round answered, or a
    call answered (at ``answered_at``, ``time.monotonic()``) less than a
    deadline before this round began. When none has, the cluster as a
    whole is slow (or the deadline too short), and waiting on is right, up
    to ``adadamp.recover-timeout``.

    ``gone(address)`` says the scheduler removed the worker: its call is
    cancelled at once and reported ``"lost"`` (a call that had to open a new
    connection to a worker just killed would otherwise retry the refused
    connect up to its deadline).
    """
    start = time.monotonic()
    limit = start + recover_timeout()
    due = {t: start + deadlines[a] for t, a in tasks.items()}
    replies, pending = {}, set(tasks)
    answered = answered_at is not None and start - answered_at < min(deadlines.values())
    try:
        while pending:
            now = time.monotonic()
            wake = min([d for t, d in due.items() if t in pending and d > now] + [limit]
                       + ([now + WATCH_S] if gone is not None else []))
            done, pending = await asyncio.wait(pending, timeout=max(0.0, wake - now),
                                               return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                replies[tasks[t]] = t.result()
                answered = True
            now = time.monotonic()
            left = {t for t in pending if gone is not None and gone(tasks[t])}
            for t in left:
                t.cancel()
                replies[tasks[t]] = {"status": "lost", "error": "the scheduler removed it"}
            pending -= left
            late = {t for t in pending if now >= due[t] and (answered or now >= limit)}
            for t in late:
                t.cancel()
                replies[tasks[t]] = {"status": "stalled", "deadline_s": deadlines[tasks[t]]}
            pending -= late
        return {a: replies[a] for a in tasks.values()}
    finally:
        # Left by an error (a call's, or the fit interrupted): no call left
        # running, and no call's error reported by asyncio as never retrieved.
        for t in tasks:
            if not t.done():
                t.cancel()
            elif not t.cancelled():
                t.exception()
