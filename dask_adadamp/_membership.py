"""Which workers the scheduler has, learned from its own events.

The scheduler logs ``add-worker`` and ``remove-worker`` (with the worker's
address) on its event topic ``"all"``, and tells every subscribed client.
A :class:`Membership` keeps the live set from those events, so a fit knows
at once that a worker left (retired, scaled down, preempted, killed) without
asking the scheduler before each update and without calling the departed
address (a refused connect is retried for ``distributed.comm.timeouts.connect``,
30 s by default). It also records when each worker arrived, from which the
scaler learns how long this cluster takes to deliver a worker.

One membership per client, shared by the fits on it (:func:`acquire`,
:func:`release`); a handler the user subscribed to ``"all"`` keeps getting
every event.

Examples
--------
>>> from distributed import Client, LocalCluster
>>> cluster = LocalCluster(n_workers=1, processes=False, dashboard_address=':0')
>>> client = Client(cluster)
>>> members = acquire(client)
>>> len(members.live)
1
>>> release(client)
>>> client.close(); cluster.close()
"""
import asyncio
import threading
import time

TOPIC = "all"
# Seconds after subscribing at which the membership asks the scheduler
# once more (see Membership.__init__).
SETTLE_S = 0.5

_shared = {}
_lock = threading.Lock()


class Membership:
    """The workers of ``client``'s scheduler, kept up to date by its events.

    Attributes
    ----------
    live : set of str
        Addresses the scheduler has now (as far as its events have told).
    removed : set of str
        Addresses it removed since the membership started; never live
        again (a restarted worker comes back under a new address).
    arrivals : list of (float, str)
        ``time.monotonic()`` of each worker's ``add-worker`` event, in order.
    version : int
        Bumped at every change of ``live``.
    """

    def __init__(self, client):
        self.client = client
        self.removed = set()
        self.arrivals = []
        self.version = 0
        self._users = 0
        self._added = set()
        # The handler runs on the client's event loop, readers in the fit's
        # thread: every read and change of the sets under the lock.
        self._lock = threading.Lock()
        chained = client._event_handlers.get(TOPIC)
        self._chained = None if chained is _ignore else chained
        client.subscribe_topic(TOPIC, self._on_event)
        # Removals are sticky, so the order of snapshot and events does not
        # matter for them. An arrival can fall between the snapshot and the
        # moment the subscription reaches the scheduler (it travels in the
        # client's batched stream, the snapshot in a call of its own): a
        # second snapshot, a moment later, catches it.
        self._snapshot = set(client.nthreads())
        client.loop.add_callback(self._resnapshot, SETTLE_S)

    @property
    def live(self):
        with self._lock:
            return self._live()

    def _live(self):
        return (self._snapshot | self._added) - self.removed

    def _on_event(self, event):
        _, msg = event
        if isinstance(msg, dict) and "worker" in msg:
            action = msg.get("action")
            with self._lock:
                if action == "add-worker" and msg["worker"] not in self.removed:
                    self._added.add(msg["worker"])
                    self.arrivals.append((time.monotonic(), msg["worker"]))
                    self.version += 1
                elif action == "remove-worker":
                    self.removed.add(msg["worker"])
                    self.version += 1
        if self._chained is not None:
            return self._chained(event)
        return None

    def _update(self, snapshot):
        with self._lock:
            new = set(snapshot) - self._live()
            self._snapshot = set(snapshot)
            self._added -= self._snapshot
            now = time.monotonic()
            self.arrivals.extend((now, addr) for addr in sorted(new))
            self.version += 1

    async def _resnapshot(self, delay):
        await asyncio.sleep(delay)
        try:
            self._update(await self.client.scheduler.ncores())
        except Exception:  # a client closing: nothing to learn
            pass

    def refresh(self):
        """Ask the scheduler once (a round trip): for a scheduler that
        still lists a worker whose process is gone, or events delayed."""
        self._update(self.client.nthreads())
        return self.live

    def close(self):
        if self.client._event_handlers.get(TOPIC) == self._on_event:
            if self._chained is not None:
                self.client._event_handlers[TOPIC] = self._chained
            else:
                try:
                    self.client.unsubscribe_topic(TOPIC)
                except Exception:  # a closed client: nothing to undo
                    pass
                # Events already on their way still find a handler: without
                # one, the client raises in its report loop.
                self.client._event_handlers[TOPIC] = _ignore


def _ignore(event):
    """The handler left behind once unsubscribed."""


def acquire(client):
    """The membership of ``client``, started on first use."""
    with _lock:
        members = _shared.get(id(client))
        if members is None or members.client is not client:
            members = _shared[id(client)] = Membership(client)
        members._users += 1
        return members


def release(client):
    """One fit is done with the membership; the last one stops it."""
    with _lock:
        members = _shared.get(id(client))
        if members is None or members.client is not client:
            return
        members._users -= 1
        if members._users <= 0:
            del _shared[id(client)]
            members.close()
