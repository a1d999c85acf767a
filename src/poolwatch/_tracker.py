"""The tracker: one registry of pools and live leases, counters and events.

Adapters call ``checkout`` / ``checkin`` and friends; consumers call ``snapshot`` or
``subscribe``. The hot path (checkout, checkin, their ``_of`` forms that take the library's pool
object, ``find_pool``, ``set_owner``, ``attach_response``) takes no lock: each of its writes is
one dict store or pop, one list item or one ``next()`` on a counter, atomic under the GIL, and
it runs in C where this build has ``_speedups`` (the methods of the same names with a leading
underscore are the reference; they are bound per tracker in ``__init__``). Work a report may
never need is deferred to the report: a pool's ``response_of``, deferred ``attach_response``
facts. Everything else shares one short ``threading.Lock`` under which nothing slow happens:
snapshots copy references under it and build their frozen values outside. A snapshot taken
while checkouts go on is exact per counter, not across counters (leased may lead checkouts -
checkins by the checkouts in flight).

Garbage-collector callbacks (an owner collected while its connection was leased, a pool
collected) never take the lock: the collector may run inside any allocation, including one made
while this thread holds the lock. They append to a deque that the next tracker call drains.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import suppress
from functools import partial
from operator import itemgetter
from threading import current_thread, get_ident
from typing import Any, Protocol

from ._callsite import _LOOP, _USER, CallSiteFinder
from ._callsite import _TASK as _TASK_SITE
from ._callsite import _UNKNOWN as _UNKNOWN_SITE
from ._models import (
    CallSite,
    Event,
    Lease,
    PoolSnapshot,
    ResponseFacts,
    Snapshot,
    SocketInfo,
    Waiter,
)
from ._native import speedups

__all__ = ["LEAK_STATES", "LeaseRecord", "PoolRecord", "PoolStats", "Tracker"]

log = logging.getLogger("poolwatch")

#: Lease states that mean the user's code lost a connection.
LEAK_STATES = frozenset({"lost", "closed", "gc_returned"})

_LOST_NOTE = "its owner was garbage collected while leased; the slot is lost"
_POOL_GONE_NOTE = "the pool was garbage collected while leased"

#: (max, idle, waiting) as the library itself reports them; None where it cannot tell.
PoolStats = tuple[int | None, int | None, int | None]


class _StatsFn(Protocol):
    def __call__(self, pool: Any, /) -> PoolStats: ...


class _SocketFn(Protocol):
    def __call__(self, connection: Any, /) -> Any: ...


class _IdleFn(Protocol):
    def __call__(self, pool: Any, /) -> Iterable[Any]: ...


class _ResponseFn(Protocol):
    def __call__(self, connection: Any, /) -> ResponseFacts | None: ...


class PoolRecord:
    """The tracker's mutable record of one library pool. Only the tracker changes it."""

    __slots__ = (
        "__weakref__",
        "checkin_count",
        "checkout_count",
        "confirmed_leaks",
        "exhaustions",
        "idle_of",
        "kind",
        "leaks_by_callsite",
        "leases",
        "lost",
        "lost_evicted",
        "name",
        "orphans",
        "ref",
        "response_of",
        "socket_of",
        "spare",
        "stats",
    )

    def __init__(
        self,
        ref: weakref.ref[Any],
        kind: str,
        name: str,
        stats: _StatsFn | None,
        socket_of: _SocketFn | None,
        idle_of: _IdleFn | None = None,
        response_of: _ResponseFn | None = None,
    ) -> None:
        self.ref = ref
        self.idle_of = idle_of
        self.response_of = response_of
        self.kind = kind
        self.name = name
        self.stats = stats
        self.socket_of = socket_of
        self.leases: dict[int, LeaseRecord] = {}
        # Leases whose owner was collected: the slot is gone but the connection object too, so
        # they leave ``leases`` (whose keys are ids that may now be reused) for this deque.
        self.lost: deque[LeaseRecord] = deque()
        self.lost_evicted = 0
        # The hot path counts with next() on these: atomic under the GIL, with no lock.
        self.checkout_count = itertools.count(1)
        self.checkin_count = itertools.count(1)
        self.exhaustions = 0
        self.confirmed_leaks = 0
        self.orphans = 0
        self.leaks_by_callsite: Counter[CallSite] = Counter()
        # The C hot path's last checked-in record, refilled by the next checkout when nothing
        # else holds it (an allocation and a weak reference saved per request); unused in Python.
        self.spare: LeaseRecord | None = None

    @property
    def checkouts(self) -> int:
        return _count_value(self.checkout_count)

    @property
    def checkins(self) -> int:
        return _count_value(self.checkin_count)

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"

    def __repr__(self) -> str:
        return f"<PoolRecord {self.label} [leased {len(self.leases) + len(self.lost)}]>"


def _carries_its_response(record: LeaseRecord) -> bool:
    """The lease's connection still carries its response: leased, or ended as a leak."""
    return record.state is None or record.state in LEAK_STATES


def _count_value(counter: itertools.count[int]) -> int:
    """How many times ``next()`` ran on ``counter`` (started at 1), without advancing it.

    ``count`` has no reader; its repr, ``count(N)``, is the documented way to see N.
    """
    return int(repr(counter)[6:-1]) - 1


# Field positions in a LeaseRecord (a list: building one costs a third of a class instance).
_POOL, _KEY, _CONNECTION, _ACQUIRED_AT, _SITE, _THREAD, _TASK_NAME = range(7)
_SEQ, _STATE, _RESPONSE, _NOTE, _OWNER_REF = range(7, 12)


class LeaseRecord(list[Any]):
    """The tracker's mutable record of one lease; frozen into a ``Lease`` for consumers.

    A list with named read-only fields: a checkout builds one per call, and a list subclass
    built from a tuple costs a third of a slotted class's ``__init__``. Only the tracker writes
    to it, by position; ``state``, ``response``, ``note`` and ``owner_ref`` start as None.
    """

    __slots__ = ()

    pool: PoolRecord = property(itemgetter(_POOL))  # type: ignore[assignment]
    key: int = property(itemgetter(_KEY))  # type: ignore[assignment]
    #: A weak reference to the connection object, or None.
    connection: weakref.ref[Any] | None = property(itemgetter(_CONNECTION))  # type: ignore[assignment]
    acquired_at: float = property(itemgetter(_ACQUIRED_AT))  # type: ignore[assignment]
    site: tuple[CallSite, tuple[CallSite, ...]] = property(itemgetter(_SITE))  # type: ignore[assignment]
    thread: threading.Thread = property(itemgetter(_THREAD))  # type: ignore[assignment]
    task_name: str | None = property(itemgetter(_TASK_NAME))  # type: ignore[assignment]
    seq: int = property(itemgetter(_SEQ))  # type: ignore[assignment]
    #: None while leased; then "returned", "lost", "closed", "orphaned" ...
    state: str | None = property(itemgetter(_STATE))  # type: ignore[assignment]

    @property
    def response(self) -> ResponseFacts | None:
        """The response's facts; an adapter may attach them as ``(function, *arguments)``,
        computed here on first read (most leases end before anyone reads them)."""
        facts = self[_RESPONSE]
        if type(facts) is tuple:
            facts = self[_RESPONSE] = facts[0](*facts[1:])
        return facts  # type: ignore[no-any-return]

    note: str | None = property(itemgetter(_NOTE))  # type: ignore[assignment]
    owner_ref: weakref.ref[Any] | None = property(itemgetter(_OWNER_REF))  # type: ignore[assignment]

    @property
    def callsite(self) -> CallSite:
        return self[_SITE][0]  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<LeaseRecord #{self[_SEQ]} {self[_POOL].label} at {self.callsite}>"

    # Records are compared by identity (deque.remove, ``in``), never by their fields.
    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__  # type: ignore[assignment]


#: Thread objects by ident, as ``threading.current_thread()`` reads them (without its call).
_threads: dict[int, threading.Thread] = getattr(threading, "_active", {})


def _task_name(loop: Any) -> str | None:
    """The name of the asyncio task running on ``loop``, if any."""
    task = sys.modules["asyncio"].current_task(loop)
    return task.get_name() if task is not None else None


_ORPHAN_NOTE = "connection checked out again without a checkin"

if speedups is not None:
    speedups.configure(
        _TASK_SITE,
        _UNKNOWN_SITE,
        LeaseRecord,
        _threads,
        current_thread,
        _task_name,
        _ORPHAN_NOTE,
        _USER,
        _LOOP,
        PoolRecord,
    )


class _Checkout(Protocol):
    def __call__(
        self,
        pool: PoolRecord,
        key: int,
        connection: Any = None,
        site: tuple[CallSite, tuple[CallSite, ...]] | None = None,
    ) -> LeaseRecord: ...


class _Checkin(Protocol):
    def __call__(self, pool: PoolRecord, key: int, how: str = "returned") -> LeaseRecord | None: ...


def _socket_info(sock: Any) -> SocketInfo | None:
    """Peer, local address and inode of a socket object, or None when it is closed."""

    try:
        fd = sock.fileno()
    except Exception:
        return None
    if fd is None or fd < 0:
        return None
    local = peer = None
    inode = None
    with suppress(OSError):
        local = sock.getsockname()[:2]
    with suppress(OSError):
        peer = sock.getpeername()[:2]
    with suppress(OSError):
        inode = os.fstat(fd).st_ino
    return SocketInfo(local=local, peer=peer, inode=inode, fd=fd)


class Tracker:
    """Pools, live leases, counters and events for every instrumented client library.

    ``clock`` is the monotonic clock (a seam for tests; a clock that raises is how the test
    suite proves that a fault in poolwatch never reaches the caller's request).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        callsites: CallSiteFinder | None = None,
        stack_depth: int = 0,
        event_history: int = 1000,
        leak_history: int = 10_000,
        max_lost_per_pool: int = 10_000,
    ) -> None:
        self._clock = clock
        self._wall_offset = wall_clock() - clock()
        self.callsites = callsites or CallSiteFinder()
        self._stack_depth = stack_depth
        self.max_lost_per_pool = max_lost_per_pool
        self._lock = threading.Lock()
        # next() on itertools.count is atomic under the GIL: seq needs no lock.
        self._seq_counter = itertools.count(1)
        self._wait_tokens = itertools.count(1)
        self._pools: dict[int, PoolRecord] = {}
        self._waiters: dict[int, tuple[PoolRecord, float, str, CallSite]] = {}
        self._events: deque[Event] = deque(maxlen=event_history)
        self._ended_leaks: deque[LeaseRecord] = deque(maxlen=leak_history)
        # What garbage-collector callbacks report, applied by the next tracker call (_drain):
        # ("owner", record) an owner collected while leased, ("end", record, state, note,
        # detach) a lease ended from a finalizer (detach: not yet taken out of its pool's
        # leases), ("pool", key) a pool object collected.
        self._pending: deque[tuple[Any, ...]] = deque()
        # asyncio's _get_running_loop once asyncio is imported (checkouts then name the task).
        self._running_loop: Callable[[], Any] | None = None
        self._subscribers: list[Callable[[Event], None]] = []
        self.internal_errors: Counter[str] = Counter()
        self._logged_errors: set[str] = set()
        # Only internal_error takes it, around one count: never held while anything else
        # runs. Reentrant: a finalizer that faults may run inside that count's allocation.
        self._errors_lock = threading.RLock()
        # The hot path: the C twins of _checkout and _checkin where this build has them.
        self.checkout: _Checkout = self._checkout
        self.checkin: _Checkin = self._checkin
        self.checkout_of: Callable[[Any, Any], LeaseRecord | None] = self._checkout_of
        self.checkin_of: Callable[[Any, Any], LeaseRecord | None] = self._checkin_of
        self.find_pool: Callable[[Any], PoolRecord | None] = self._find_pool
        self.set_owner: Callable[[LeaseRecord, Any], None] = self._set_owner
        self.attach_response: Callable[[LeaseRecord, Any], None] = self._attach_response
        if speedups is not None:
            self.find_pool = partial(speedups.find_pool, self._pools)
            self.set_owner = partial(speedups.set_owner, self._pending)
            self.attach_response = speedups.attach_response
            # The C finder straight from checkout: where capture is C and sites carry no
            # stack (stack_depth is fixed for the tracker's life, so this holds).
            finder = self.callsites if self.callsites.native and not stack_depth else None
            pending, seq, pools = self._pending, self._seq_counter, self._pools
            self.checkout = partial(speedups.checkout, self, pending, seq, finder)
            self.checkin = partial(speedups.checkin, self, pending)
            self.checkout_of = partial(speedups.checkout_of, self, pending, seq, finder, pools)
            self.checkin_of = partial(speedups.checkin_of, self, pending, pools)

    @property
    def stack_depth(self) -> int:
        """How many user frames a lease's call site records beyond the first (set once, at
        construction: the hot path is bound to it)."""
        return self._stack_depth

    # -- pools -------------------------------------------------------------------------------

    def pool(
        self,
        obj: Any,
        kind: str,
        name: str | Callable[[], str],
        *,
        stats: _StatsFn | None = None,
        socket_of: _SocketFn | None = None,
        idle_of: _IdleFn | None = None,
        response_of: _ResponseFn | None = None,
    ) -> PoolRecord:
        """The record of a library pool object, registering it on first sight.

        ``stats(pool)`` gives (max, idle, waiting) as the library reports them;
        ``socket_of(connection)`` the connection's socket object (or None);
        ``idle_of(pool)`` the sockets of the pool's idle connections (for the census join);
        ``response_of(connection)`` the facts of the response the connection is carrying (or
        None), read only when a lease is reported, for libraries where recording them on every
        request would cost more than the rest of the hooks (``attach_response`` records them
        eagerly).
        """
        key = id(obj)
        record = self._pools.get(key)
        if record is not None:
            if record.ref() is obj:
                return record
            # A collected pool whose id a new one reuses before its report was applied: retire
            # it now, or its leases would vanish with the record this one replaces.
            self._pool_collected(key)
        pending = self._pending
        ref = weakref.ref(obj, lambda _ref: pending.append(("pool", key)))
        record = PoolRecord(
            ref, kind, name() if callable(name) else name, stats, socket_of, idle_of, response_of
        )
        with self._lock:
            # Another thread may have met this pool at the same moment: the first record wins,
            # or the leases taken through the other would land in a record nobody reads.
            first = self._pools.get(key)
            if first is not None and first.ref() is obj:
                return first
            self._pools[key] = record
        return record

    def _find_pool(self, obj: Any) -> PoolRecord | None:
        """``find_pool``: the record of an already registered pool object, without
        registering it (C where the hot path is: adapters call it on every request)."""
        record = self._pools.get(id(obj))
        return record if record is not None and record.ref() is obj else None

    # -- hot path ----------------------------------------------------------------------------

    def capture(self, library_frames: int = 0) -> tuple[CallSite, tuple[CallSite, ...]]:
        """The call site of the user code running now (see ``CallSiteFinder``).

        ``library_frames``: how many frames above the caller are expected to be library code
        (urllib3's ``urlopen`` above the ``_get_conn`` hook): they are jumped over, not walked,
        which saves building a frame object for each (checked when user code follows them).
        """
        # 2: this method and its caller (an adapter hook) are poolwatch frames.
        return self.callsites.capture(self._stack_depth, 2, library_frames)

    def _checkout(
        self,
        pool: PoolRecord,
        key: int,
        connection: Any = None,
        site: tuple[CallSite, tuple[CallSite, ...]] | None = None,
    ) -> LeaseRecord:
        """``checkout``: record that ``key`` (the connection's id) left ``pool`` for the caller.

        ``site`` is the call site when the caller captured it already. The hot path takes no
        lock: one dict store and ``next()`` on counters, each atomic under the GIL (the cold
        paths that also remove leases take care of that; ``_detach``).
        """
        if self._pending:
            self._drain()
        if site is None:
            site = self.callsites.capture(self._stack_depth, 1)
        conn_ref = None
        if connection is not None:
            try:  # noqa: SIM105 - contextlib.suppress costs an object per checkout
                conn_ref = weakref.ref(connection)
            except TypeError:
                pass
        running_loop = self._running_loop or self._find_running_loop()
        loop = running_loop() if running_loop is not None else None
        record = LeaseRecord(
            (
                pool,
                key,
                conn_ref,
                self._clock(),
                site,
                _threads.get(get_ident()) or current_thread(),
                None if loop is None else _task_name(loop),
                next(self._seq_counter),
                None,
                None,
                None,
                None,
            )
        )
        # Looked up and stored in one step, as the C twin does: a checkin of the previous
        # lease running meanwhile on another thread cannot slip between the two.
        leases = pool.leases
        previous = leases.setdefault(key, record)
        if previous is not record:
            leases[key] = record
        next(pool.checkout_count)
        if previous is not record:
            # The same connection leased twice without a checkin: the library reused it under
            # us. The older lease cannot still hold it; close it as an orphan.
            self._end(previous, "orphaned", "connection checked out again without a checkin", False)
        return record

    def _find_running_loop(self) -> Callable[[], Any] | None:
        aio = sys.modules.get("asyncio")
        if aio is not None:
            self._running_loop = aio.events._get_running_loop
        return self._running_loop

    def _checkin(self, pool: PoolRecord, key: int, how: str = "returned") -> LeaseRecord | None:
        """``checkin``: the connection ``key`` came back to ``pool`` (or was discarded)."""
        record = pool.leases.pop(key, None)
        if record is None:
            return None
        next(pool.checkin_count)
        record[_STATE] = how
        # Its owner's weak reference goes with it: no callback for an owner collected later.
        record[_OWNER_REF] = None
        if self._pending:
            self._drain()
        return record

    def _checkout_of(self, obj: Any, connection: Any) -> LeaseRecord | None:
        """``checkout_of``: ``checkout`` of ``connection`` (keyed by its id) from the library
        pool object ``obj``; None, recording nothing, when ``obj`` is not registered yet.

        For hooks that see the library's objects, not records: the pool lookup is part of the
        hot path (in C where ``checkout`` is)."""
        record = self._find_pool(obj)
        return None if record is None else self.checkout(record, id(connection), connection)

    def _checkin_of(self, obj: Any, connection: Any) -> LeaseRecord | None:
        """``checkin_of``: ``checkin`` of ``connection`` to the library pool object ``obj``."""
        record = self._find_pool(obj)
        return None if record is None else self.checkin(record, id(connection))

    def checkin_record(self, record: LeaseRecord, how: str = "returned") -> bool:
        """Check in a known lease record (for libraries that return a connection as None)."""
        with self._lock:
            if not self._detach(record):
                return False
            next(record.pool.checkin_count)
            record[_STATE] = how
            record[_OWNER_REF] = None
        return True

    @staticmethod
    def _detach(record: LeaseRecord) -> bool:
        """Remove a live or lost lease from its pool (call with the lock held).

        The lock-free hot path may check this lease in, and even lease its connection again,
        while this runs: the lease is removed only if it is still the one under its key.
        """
        pool = record.pool
        leases = pool.leases
        key = record.key
        if leases.get(key) is record:
            current = leases.pop(key, None)
            if current is record:
                return True
            if current is not None:  # checked in and leased again in between: not ours
                leases.setdefault(key, current)
            return False
        if record in pool.lost:
            pool.lost.remove(record)
            return True
        return False

    def lease_of(self, pool: PoolRecord, key: int) -> LeaseRecord | None:
        """The live lease of connection ``key`` in ``pool``, if any."""
        return pool.leases.get(key)

    def _set_owner(self, record: LeaseRecord, owner: Any) -> None:
        """``set_owner``: watch ``owner`` (a response, a connection wrapper): collected while
        leased = leak (C where the hot path is: adapters call it on every request)."""
        pending = self._pending

        def _on_collected(_ref: Any, record: LeaseRecord = record) -> None:
            pending.append(("owner", record))

        try:  # noqa: SIM105 - contextlib.suppress costs three calls per request
            record[_OWNER_REF] = weakref.ref(owner, _on_collected)
        except TypeError:
            pass

    def reconnect(self, record: LeaseRecord, connection: Any) -> None:
        """The lease now holds ``connection``: the library retried the same request on another
        connection (httpcore after ``ConnectionNotAvailable``). Still one request, one lease."""
        try:
            record[_CONNECTION] = weakref.ref(connection)
        except TypeError:
            record[_CONNECTION] = None

    def _attach_response(self, record: LeaseRecord, facts: ResponseFacts | tuple[Any, ...]) -> None:
        """``attach_response``: attach what the response looked like to the lease that carried
        it: its facts, or ``(function, *arguments)`` returning them, called only if the lease is
        ever read (C where the hot path is: httpx attaches them on every request)."""
        record[_RESPONSE] = facts

    # -- waiting and exhaustion --------------------------------------------------------------

    def wait_begin(self, pool: PoolRecord, site: tuple[CallSite, Any]) -> int:
        """Register a caller about to block in ``pool``; returns a token for ``wait_end``."""
        thread = threading.current_thread()
        # A counter, not anything derived from the call site: call sites are interned, so two
        # tasks waiting at one line on one thread would otherwise share a token.
        token = next(self._wait_tokens)
        self._waiters[token] = (pool, self._clock(), thread.name, site[0])
        return token

    def wait_end(self, token: int) -> None:
        self._waiters.pop(token, None)

    def waiting(self, pool: PoolRecord) -> int:
        """How many callers poolwatch saw blocking in ``pool`` right now."""
        return sum(1 for entry in list(self._waiters.values()) if entry[0] is pool)

    def exhausted(self, pool: PoolRecord, error: BaseException | None = None) -> str:
        """Count a pool timeout; returns the diagnosis (and adds it to ``error`` as a note)."""
        with self._lock:
            pool.exhaustions += 1
        text = self.diagnose(pool)
        if error is not None and hasattr(error, "add_note"):
            error.add_note(text)
        self._emit(Event("exhausted", pool.label, self.wall(), text))
        return text

    def diagnose(self, pool: PoolRecord) -> str:
        """Pool state and the call sites holding its connections, most first."""
        snap = self._pool_snapshot(pool, self._copy_pool(pool), self._clock(), sockets=False)
        lines = [f"poolwatch: {snap!r} is exhausted."]
        if not snap.leases:
            lines.append("  No lease is held through poolwatch's hooks.")
        else:
            lines.append(f"  Its {snap.leased} leased connections were taken at:")
            lines.extend("  " + line for line in group_by_callsite(snap.leases))
        return "\n".join(lines)

    # -- leases ending badly -----------------------------------------------------------------

    def end(self, pool: PoolRecord, key: int, state: str, note: str | None = None) -> bool:
        """End the lease of ``key`` as ``closed`` / ``gc_returned`` / ``orphaned`` ..."""
        record = pool.leases.get(key)
        if record is None:
            return False
        return self._end(record, state, note)

    def end_record(self, record: LeaseRecord, state: str, note: str | None = None) -> bool:
        """``end`` of a known lease record: False if it is no longer leased (checked in, or
        its connection leased again to another lease under the same key)."""
        return self._end(record, state, note)

    def end_soon(self, record: LeaseRecord, state: str, note: str | None = None) -> None:
        """``end`` for garbage-collector callbacks: takes no lock; the next tracker call applies it.

        A library that returns a connection from a finalizer (SQLAlchemy's ``_finalize_fairy``)
        may run it inside an allocation made while this thread holds the lock. The lease leaves
        its pool's leases at once, as a checkin would (one dict pop, atomic under the GIL), so
        the checkin that the finalizer goes on to make finds nothing to count.
        """
        leases, key = record[_POOL].leases, record[_KEY]
        current = leases.pop(key, None) if leases.get(key) is record else None
        if current is not None and current is not record:  # leased again in between: not ours
            leases.setdefault(key, current)
        self._pending.append(("end", record, state, note, current is not record))

    def _end(self, record: LeaseRecord, state: str, note: str | None, detach: bool = True) -> bool:
        with self._lock:
            if detach and not self._detach(record):
                return False
            self._settle(record, state, note)
        self._announce(record, state, note)
        return True

    def _settle(self, record: LeaseRecord, state: str, note: str | None) -> None:
        """Give an ended lease its state and count it (call with the lock held)."""
        pool = record.pool
        record[_STATE] = state
        record[_NOTE] = note
        record[_OWNER_REF] = None
        if state in LEAK_STATES:
            pool.confirmed_leaks += 1
            pool.leaks_by_callsite[record.callsite] += 1
            self._ended_leaks.append(record)
        elif state == "orphaned":
            pool.orphans += 1
            self._ended_leaks.append(record)

    def _announce(self, record: LeaseRecord, state: str, note: str | None) -> None:
        kind = "leak.confirmed" if state in LEAK_STATES else state
        self._emit(Event(kind, record.pool.label, self.wall(), note or state, self._freeze(record)))

    def _drain(self) -> None:
        """Apply what garbage-collector callbacks reported since the last call.

        Each report leaves the queue and is applied under one hold of the lock. A reader that
        drains and then copies under the lock never misses a report another thread took off
        the queue first: it waits until that report is applied.
        """
        pending = self._pending
        while pending:
            with self._lock:
                if not pending:  # another thread drained it first
                    return
                ended = self._apply(pending.popleft())
            for record, state, note in ended:
                self._announce(record, state, note)

    def _apply(self, item: tuple[Any, ...]) -> list[tuple[LeaseRecord, str, str | None]]:
        """One report from the queue (call with the lock held): the leases it ended."""
        if item[0] == "owner":
            return [(item[1], "lost", _LOST_NOTE)] if self._lose(item[1]) else []
        if item[0] == "end":
            _, record, state, note, detach = item
            if detach and not self._detach(record):
                return []
            self._settle(record, state, note)
            return [(record, state, note)]
        return [(record, "closed", _POOL_GONE_NOTE) for record in self._retire_pool(item[1])]

    def _lose(self, record: LeaseRecord) -> bool:
        """Its owner was collected while leased: the slot is lost (call with the lock held)."""
        if not self._detach(record):
            return False  # returned before its owner went
        pool = record.pool
        record[_STATE] = "lost"
        record[_OWNER_REF] = None
        pool.lost.append(record)
        if len(pool.lost) > self.max_lost_per_pool:
            pool.lost.popleft()
            pool.lost_evicted += 1
        pool.confirmed_leaks += 1
        pool.leaks_by_callsite[record.callsite] += 1
        return True

    def _retire_pool(self, key: int) -> list[LeaseRecord]:
        """Forget a collected pool and settle its leases as closed (call with the lock held).

        All under one hold: an owner's report applied next finds them gone (no lease counted
        twice), and no reader sees a lease that is in neither the pool nor the ended leaks.
        """
        dead = self._pools.get(key)
        if dead is None or dead.ref() is not None:
            return []
        del self._pools[key]
        doomed = list(dead.leases.values())
        dead.leases.clear()
        for record in doomed:
            self._settle(record, "closed", _POOL_GONE_NOTE)
        # Lost leases were counted when their owner died; keep them reportable.
        self._ended_leaks.extend(dead.lost)
        dead.lost.clear()
        return doomed

    def _pool_collected(self, key: int) -> None:
        with self._lock:
            doomed = self._retire_pool(key)
        for record in doomed:
            self._announce(record, "closed", _POOL_GONE_NOTE)

    # -- events and errors -------------------------------------------------------------------

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for each event; returns a function that unsubscribes."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock, suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    def _emit(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception as exc:
                self.internal_error("subscriber", exc)

    def internal_error(self, where: str, exc: BaseException | None = None) -> None:
        """Count a fault inside poolwatch and log it once per place; never raise."""
        try:
            with self._errors_lock:  # a read, then a write: two threads must not both read 0
                self.internal_errors[where] += 1
                first = where not in self._logged_errors
                self._logged_errors.add(where)
            if first:
                log.warning(
                    "poolwatch internal error in %s (logged once): %r", where, exc, exc_info=exc
                )
        except Exception:  # pragma: no cover - logging itself failed; stay silent
            pass

    # -- reading -----------------------------------------------------------------------------

    @property
    def seq(self) -> int:
        """The sequence number of the newest lease; leases after a mark have a larger one."""
        return _count_value(self._seq_counter)

    def wall(self, monotonic: float | None = None) -> float:
        """Wall-clock time of a monotonic instant (now by default)."""
        return (self._clock() if monotonic is None else monotonic) + self._wall_offset

    def _copy_pool(self, pool: PoolRecord) -> tuple[list[LeaseRecord], tuple[int, ...]]:
        with self._lock:
            return [*pool.leases.values(), *pool.lost], self._counters(pool)

    def snapshot(self, *, leases: bool = True, sockets: bool = False) -> Snapshot:
        """Every pool with its counters (and leases, oldest first), copied out of the lock."""
        self._drain()
        with self._lock:
            copied = []
            for pool in self._pools.values():
                records = list(pool.leases.values()) if leases else []
                if leases:
                    records.extend(pool.lost)
                copied.append((pool, records, self._counters(pool), pool.ref()))
            events = tuple(self._events)
        now = self._clock()
        pools = tuple(
            self._build(pool, records, counters, obj, now, leases=leases, sockets=sockets)
            for pool, records, counters, obj in copied
            if obj is not None or records
        )
        return Snapshot(now + self._wall_offset, pools, events, dict(self.internal_errors))

    @staticmethod
    def _counters(pool: PoolRecord) -> tuple[int, ...]:
        return (
            pool.checkouts,
            pool.checkins,
            pool.exhaustions,
            pool.confirmed_leaks,
            pool.orphans,
            pool.lost_evicted,
            len(pool.leases) + len(pool.lost) + pool.lost_evicted,
        )

    def _pool_snapshot(
        self,
        pool: PoolRecord,
        copied: tuple[list[LeaseRecord], tuple[int, ...]],
        now: float,
        *,
        sockets: bool,
    ) -> PoolSnapshot:
        records, counters = copied
        return self._build(pool, records, counters, pool.ref(), now, leases=True, sockets=sockets)

    def _build(
        self,
        pool: PoolRecord,
        records: list[LeaseRecord],
        counters: tuple[int, ...],
        obj: Any,
        now: float,
        *,
        leases: bool,
        sockets: bool,
    ) -> PoolSnapshot:
        checkouts, checkins, exhaustions, confirmed, orphans, _evicted, leased = counters
        cap = idle = lib_waiting = None
        if obj is not None and pool.stats is not None:
            try:
                cap, idle, lib_waiting = pool.stats(obj)
            except Exception as exc:
                self.internal_error(f"{pool.kind}.stats", exc)
        waiters = tuple(
            Waiter(pool.label, since, now - since, thread_name, site)
            for entry_pool, since, thread_name, site in list(self._waiters.values())
            if entry_pool is pool
        )
        frozen: tuple[Lease, ...] = ()
        if leases:
            records.sort(key=lambda r: r.acquired_at)
            frozen = tuple(self._freeze(r, now, sockets=sockets) for r in records)
        return PoolSnapshot(
            kind=pool.kind,
            name=pool.name,
            leased=leased,
            idle=idle,
            waiting=max(lib_waiting or 0, len(waiters)),
            max=cap,
            checkouts=checkouts,
            checkins=checkins,
            exhaustions=exhaustions,
            confirmed_leaks=confirmed,
            orphans=orphans,
            leases=frozen,
            waiters=waiters,
            leaks_by_callsite=tuple(pool.leaks_by_callsite.most_common()),
        )

    def _freeze(
        self, record: LeaseRecord, now: float | None = None, *, sockets: bool = False
    ) -> Lease:
        now = self._clock() if now is None else now
        socket_info = None
        conn = record.connection() if record.connection is not None else None
        try:
            response = record.response
        except Exception as exc:  # the adapter's deferred facts failed: no facts, counted
            record[_RESPONSE] = response = None
            self.internal_error(f"{record.pool.kind}.response", exc)
        # Read only while the connection still carries this lease's response: live, or just
        # ended as a leak (not returned or orphaned: then it may carry the next lease's). The
        # library's answer counts only if that still holds once it is read.
        if (
            response is None
            and conn is not None
            and record.pool.response_of is not None
            and _carries_its_response(record)
        ):
            try:
                response = record.pool.response_of(conn)
                if not _carries_its_response(record):
                    response = None
                elif response is not None:
                    record[_RESPONSE] = response  # kept: it may be gone at the next look
            except Exception as exc:
                self.internal_error(f"{record.pool.kind}.response_of", exc)
        if sockets and conn is not None and record.pool.socket_of is not None:
            try:
                sock = record.pool.socket_of(conn)
                socket_info = _socket_info(sock) if sock is not None else None
            except Exception as exc:
                self.internal_error(f"{record.pool.kind}.socket_of", exc)
        return Lease(
            seq=record.seq,
            pool=record.pool.label,
            pool_kind=record.pool.kind,
            connection_id=record.key,
            acquired_at=record.acquired_at,
            acquired_wall=record.acquired_at + self._wall_offset,
            age=now - record.acquired_at,
            callsite=record.site[0],
            stack=record.site[1],
            thread_id=record.thread.ident or 0,
            thread_name=record.thread.name,
            task_name=record.task_name,
            response=response,
            state=record.state or "leased",
            socket=socket_info,
            note=record.note,
        )

    def leaks_since(
        self, seq: int, *, exclude: Collection[int] = (), sockets: bool = False
    ) -> list[Lease]:
        """Leases taken after ``seq`` that are still out or that ended as leaks, oldest first.

        Orphans (connections the library itself lost) are not the caller's leaks: see
        ``orphans_since``.
        """
        return self._ended_since(seq, exclude, sockets, orphans=False)

    def orphans_since(self, seq: int, *, exclude: Collection[int] = ()) -> list[Lease]:
        """Leases taken after ``seq`` that the library orphaned, oldest first."""
        return self._ended_since(seq, exclude, False, orphans=True)

    def _ended_since(
        self, seq: int, exclude: Collection[int], sockets: bool, *, orphans: bool
    ) -> list[Lease]:
        self._drain()
        with self._lock:
            records = (
                []
                if orphans
                else [
                    r
                    for pool in self._pools.values()
                    for r in (*pool.leases.values(), *pool.lost)
                    if r.seq > seq and r.seq not in exclude
                ]
            )
            records.extend(
                r
                for r in self._ended_leaks
                if r.seq > seq and r.seq not in exclude and (r.state == "orphaned") is orphans
            )
        now = self._clock()
        records.sort(key=lambda r: r.seq)
        return [self._freeze(r, now, sockets=sockets) for r in records]

    def live_seqs(self, low: int, high: int) -> list[int]:
        """Sequence numbers in (low, high] still leased: what a fixture's setup took."""
        self._drain()
        with self._lock:
            return [
                r.seq
                for pool in self._pools.values()
                for r in (*pool.leases.values(), *pool.lost)
                if low < r.seq <= high
            ]

    def idle_sockets(self) -> list[tuple[str, SocketInfo]]:
        """(pool label, socket identity) of every idle pooled connection poolwatch can see."""
        out = []
        for pool in self.iter_pools():
            obj = pool.ref()
            if obj is None or pool.idle_of is None:
                continue
            try:
                for sock in pool.idle_of(obj):
                    info = _socket_info(sock) if sock is not None else None
                    if info is not None:
                        out.append((pool.label, info))
            except Exception as exc:
                self.internal_error(f"{pool.kind}.idle_of", exc)
        return out

    def connections_of(self, seqs: Collection[int]) -> list[Any]:
        """The connection objects, where still alive, of the live leases ``seqs``.

        For clean-up tools (the hunt closes what a scenario leaked) that must not read records.
        """
        with self._lock:
            refs = [
                r.connection
                for pool in self._pools.values()
                for r in pool.leases.values()
                if r.seq in seqs and r.connection is not None
            ]
        return [conn for conn in (ref() for ref in refs) if conn is not None]

    def pool_objects(self) -> list[tuple[str, str, Any]]:
        """(kind, name, library pool object) of every pool whose object is still alive."""
        with self._lock:
            pools = list(self._pools.values())
        return [(p.kind, p.name, obj) for p in pools if (obj := p.ref()) is not None]

    def iter_pools(self) -> Iterator[PoolRecord]:
        with self._lock:
            pools = list(self._pools.values())
        yield from pools


def group_by_callsite(leases: Collection[Lease]) -> list[str]:
    """`3 x app.py:12 in fetch: 403 text/html, 1234-byte body; oldest 3.2 s (MainThread)`."""
    groups: dict[CallSite, list[Lease]] = {}
    for lease in leases:
        groups.setdefault(lease.callsite, []).append(lease)
    lines = []
    for site, members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        responses = Counter(
            m.response.describe() if m.response else "no response read yet" for m in members
        )
        oldest = max(m.age for m in members)
        states = Counter(m.state for m in members)
        state_text = ", ".join(f"{n} {s}" for s, n in states.most_common())
        response_text = "; ".join(
            f"{n} x {text}" if len(responses) > 1 else text for text, n in responses.most_common(3)
        )
        lines.append(
            f"{len(members)} x {site}: response {response_text}; oldest {oldest:.1f} s "
            f"({state_text}; {members[0].where})"
        )
    return lines
