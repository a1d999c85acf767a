"""The sampler: a background thread that snapshots the tracker at a fixed interval.

Each tick copies one tracker snapshot (and this process's CLOSE_WAIT count, when the census
module is there), appends one point to a bounded ring buffer per series, and hands the sample to
its subscribers (the alert engine). Nothing here touches a client library: it only reads
snapshots, so a slow subscriber delays the next tick, never a request.

Series are named ``"<metric>/<pool label>"`` (``"utilisation/urllib3 http://127.0.0.1:8080"``)
or, process-wide, ``"tcp.close_wait"`` and ``"pools"``; points are ``(wall time, value)``.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._models import Snapshot
from ._tracker import Tracker

__all__ = ["POOL_METRICS", "Sample", "Sampler", "series_name"]

#: Per-pool series the sampler keeps.
POOL_METRICS = (
    "leased",
    "idle",
    "waiting",
    "max",
    "utilisation",
    "checkouts",
    "exhaustions",
    "confirmed_leaks",
)


def series_name(metric: str, pool: str | None = None) -> str:
    """The name of a series: ``utilisation/urllib3 http://127.0.0.1:8080`` or ``tcp.close_wait``."""
    return metric if pool is None else f"{metric}/{pool}"


@dataclass(frozen=True, slots=True)
class Sample:
    """One tick: the tracker's snapshot, when it was taken, and the CLOSE_WAIT count."""

    at: float  # monotonic seconds
    wall: float
    snapshot: Snapshot
    close_wait: int | None = None


def _census_close_wait() -> Callable[[], int] | None:
    """A counter of this process's CLOSE_WAIT sockets, if ``poolwatch.census`` is available.

    ``process_counts`` of this process asks its own socket descriptors (no socket rows are
    built, the host's table is not read), so a count costs a few microseconds per socket held.
    """
    try:
        census: Any = importlib.import_module("poolwatch.census")
        counts = census.process_counts
    except Exception:
        return None

    def count_close_wait() -> int:
        return int(counts(states="CLOSE_WAIT").get("CLOSE_WAIT", 0))

    return count_close_wait


class Sampler:
    """Snapshot ``tracker`` every ``interval`` seconds into ring buffers of ``capacity`` points.

    ``census=None`` counts CLOSE_WAIT sockets when ``poolwatch.census`` exists; ``False``
    never; a callable returning the count is a seam for tests. A census reads /proc and costs
    milliseconds, so it runs every ``census_every`` seconds only (CLOSE_WAIT growth is judged
    over minutes); other samples carry ``close_wait=None``. ``clock`` / ``wall_clock``
    are seams too. ``start()`` runs the thread; ``sample_once()`` takes one sample in the
    caller's thread (what the thread does each tick).
    """

    def __init__(
        self,
        tracker: Tracker,
        *,
        interval: float = 1.0,
        capacity: int = 3600,
        census: bool | Callable[[], int] | None = None,
        census_every: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"sampler interval must be > 0 seconds, got {interval!r}")
        if capacity < 2:
            raise ValueError(f"sampler capacity must be >= 2 points, got {capacity!r}")
        self.tracker = tracker
        self.interval = float(interval)
        self.capacity = int(capacity)
        if callable(census):
            self._close_wait: Callable[[], int] | None = census
        elif census is False:
            self._close_wait = None
        else:
            self._close_wait = _census_close_wait()
        self.census_every = census_every
        self._census_at: float | None = None
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._series: dict[str, deque[tuple[float, float]]] = {}
        self._subscribers: list[Callable[[Sample], object]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_sample: Sample | None = None
        self._last_tick: float | None = None
        self.ticks = 0

    def __repr__(self) -> str:
        state = "alive" if self.alive else ("stopped" if self._thread else "not started")
        return (
            f"<Sampler every {self.interval:g} s "
            f"[{state} | {self.ticks} ticks | {len(self._series)} series]>"
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Sampler:
        """Start the background thread (a daemon, so it never keeps the process alive)."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="poolwatch-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for it (at most ``timeout`` seconds)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def alive(self) -> bool:
        """True while the thread runs and ticked recently (a hung sampler is not alive)."""
        thread = self._thread
        if thread is None or not thread.is_alive() or self._stop.is_set():
            return False
        last = self._last_tick
        if last is None:
            return True
        return self._clock() - last <= max(3 * self.interval, self.interval + 5.0)

    def subscribe(self, callback: Callable[[Sample], object]) -> Callable[[], None]:
        """Call ``callback(sample)`` after each tick, in the sampler thread."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def _run(self) -> None:
        next_at = self._clock()
        while not self._stop.is_set():
            self.sample_once()
            next_at += self.interval
            delay = next_at - self._clock()
            if delay < 0:  # fell behind (a slow subscriber, a suspended VM): skip, do not burst
                next_at = self._clock()
                delay = 0.0
            self._stop.wait(delay)

    # -- one tick ----------------------------------------------------------------------------

    def sample_once(self) -> Sample | None:
        """Take one sample, record it and hand it to subscribers; never raises."""
        tracker = self.tracker
        try:
            snap = tracker.snapshot(leases=True)
            close_wait = None
            now = self._clock()
            due = self._census_at is None or now - self._census_at >= self.census_every
            if self._close_wait is not None and due:
                self._census_at = now
                try:
                    close_wait = self._close_wait()
                except Exception as exc:
                    tracker.internal_error("sampler.census", exc)
            sample = Sample(self._clock(), self._wall(), snap, close_wait)
            self._record(sample)
        except Exception as exc:
            tracker.internal_error("sampler", exc)
            return None
        self.last_sample = sample
        self._last_tick = sample.at
        self.ticks += 1
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(sample)
            except Exception as exc:
                tracker.internal_error("sampler.subscriber", exc)
        return sample

    def _record(self, sample: Sample) -> None:
        wall = sample.wall
        points: list[tuple[str, float]] = [("pools", float(len(sample.snapshot.pools)))]
        if sample.close_wait is not None:
            points.append(("tcp.close_wait", float(sample.close_wait)))
        for pool in sample.snapshot.pools:
            label = f"{pool.kind} {pool.name}"
            values: dict[str, int | float | None] = {
                "leased": pool.leased,
                "idle": pool.idle,
                "waiting": pool.waiting,
                "max": pool.max,
                "utilisation": pool.utilisation,
                "checkouts": pool.checkouts,
                "exhaustions": pool.exhaustions,
                "confirmed_leaks": pool.confirmed_leaks,
            }
            points.extend(
                (f"{metric}/{label}", float(value))
                for metric, value in values.items()
                if value is not None
            )
        with self._lock:
            series = self._series
            for name, value in points:
                ring = series.get(name)
                if ring is None:
                    ring = series[name] = deque(maxlen=self.capacity)
                ring.append((wall, value))

    # -- reading -----------------------------------------------------------------------------

    def series(self, name: str) -> list[tuple[float, float]]:
        """The points of one series, oldest first (empty for an unknown name)."""
        with self._lock:
            ring = self._series.get(name)
            return list(ring) if ring is not None else []

    def names(self) -> list[str]:
        """Every series name recorded so far, sorted."""
        with self._lock:
            return sorted(self._series)
