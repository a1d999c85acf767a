"""The delivery ledger (every attempt and its outcome) and the on-disk spool.

The ledger answers "did the alert reach anyone?": each attempt is an entry (delivered, failed
with the reason, spooled, escalated, dropped), and a channel whose last attempt failed makes
the ledger unhealthy, which the admin app's health check and the heartbeat report.

The spool keeps every notification not yet delivered as one JSON file per (notification,
channel), written atomically, removed on delivery. A process that dies leaves its files behind
and the next one sends them. Each live process holds an exclusive ``flock`` on its own files, so
two processes sharing a spool directory never send the same file twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:  # POSIX only; elsewhere the spool works without cross-process claims.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["OUTCOMES", "Attempt", "ChannelHealth", "Ledger", "Spool"]

OUTCOMES = ("delivered", "failed", "spooled", "escalated", "dropped")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One ledger entry: what happened to one notification on one channel."""

    at: float  # wall clock
    notification: str  # its id
    kind: str
    subject: str
    channel: str
    outcome: str
    detail: str = ""
    latency: float | None = None  # seconds from submission (or from the alert) to this outcome
    attempt: int = 0

    def describe(self) -> str:
        took = f" after {self.latency:.2f} s" if self.latency is not None else ""
        n = f" (attempt {self.attempt})" if self.attempt else ""
        return f"{self.channel}: {self.outcome}{took}{n}: {self.detail or self.subject}"


@dataclass(slots=True)
class ChannelHealth:
    """A channel's record: consecutive failures, last error, when it last delivered."""

    name: str
    consecutive_failures: int = 0
    last_error: str | None = None
    failing_since: float | None = None
    last_delivered: float | None = None
    delivered: int = 0
    failed: int = 0

    @property
    def healthy(self) -> bool:
        return self.consecutive_failures == 0


class Ledger:
    """Recent delivery attempts (bounded) and per-channel health; thread-safe."""

    def __init__(self, capacity: int = 1000, *, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._entries: deque[Attempt] = deque(maxlen=capacity)
        self._channels: dict[str, ChannelHealth] = {}
        self._counts: Counter[tuple[str, str]] = Counter()
        self._clock = clock

    def __repr__(self) -> str:
        ok, _ = self.healthy()
        return (
            f"<Ledger [{'healthy' if ok else 'UNHEALTHY'} | {len(self._entries)} entries | "
            f"{len(self._channels)} channels]>"
        )

    def register(self, channel: str) -> None:
        """Know a channel before its first attempt (so health lists it)."""
        with self._lock:
            self._channels.setdefault(channel, ChannelHealth(channel))

    def record(
        self,
        *,
        notification: str,
        kind: str,
        subject: str,
        channel: str,
        outcome: str,
        detail: str = "",
        latency: float | None = None,
        attempt: int = 0,
    ) -> Attempt:
        if outcome not in OUTCOMES:
            raise ValueError(f"ledger outcome {outcome!r}: expected one of {OUTCOMES}")
        now = self._clock()
        entry = Attempt(
            now, notification, kind, subject, channel, outcome, detail, latency, attempt
        )
        with self._lock:
            self._entries.append(entry)
            self._counts[(channel, outcome)] += 1
            health = self._channels.setdefault(channel, ChannelHealth(channel))
            if outcome == "delivered":
                health.consecutive_failures = 0
                health.failing_since = None
                health.last_delivered = now
                health.delivered += 1
            elif outcome == "failed":
                if health.consecutive_failures == 0:
                    health.failing_since = now
                health.consecutive_failures += 1
                health.last_error = detail
                health.failed += 1
        return entry

    def entries(self, limit: int = 100) -> list[Attempt]:
        """The most recent attempts, newest first."""
        with self._lock:
            items = list(self._entries)
        items.reverse()
        return items[: max(0, limit)]

    def channels(self) -> dict[str, ChannelHealth]:
        """Every channel's health, copied."""
        with self._lock:
            return {
                name: ChannelHealth(**{s: getattr(h, s) for s in ChannelHealth.__slots__})
                for name, h in self._channels.items()
            }

    def counts(self) -> dict[tuple[str, str], int]:
        """(channel, outcome) -> number of entries ever recorded (for metrics)."""
        with self._lock:
            return dict(self._counts)

    def healthy(self, *, exclude: Collection[str] = ()) -> tuple[bool, str]:
        """(True, summary) when every channel's last attempt succeeded; else why not."""
        with self._lock:
            channels = [h for h in self._channels.values() if h.name not in exclude]
        bad = [h for h in channels if not h.healthy]
        if not channels:
            return True, "no alert channel has been used yet"
        if not bad:
            return True, f"{len(channels)} channel(s) delivering: " + ", ".join(
                sorted(h.name for h in channels)
            )
        parts = []
        for h in sorted(bad, key=lambda h: h.name):
            since = (
                time.strftime(" since %H:%M:%S UTC", time.gmtime(h.failing_since))
                if h.failing_since
                else ""
            )
            parts.append(
                f"{h.name} failing{since} ({h.consecutive_failures} attempt(s)): {h.last_error}"
            )
        return False, "; ".join(parts)


class Spool:
    """A directory of notifications waiting for delivery, one JSON file per channel."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._held: dict[str, int] = {}  # path -> open fd holding our flock
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Spool {self.directory} [{len(self._held)} held]>"

    def write(self, key: str, record: dict[str, Any]) -> str:
        """Write ``record`` atomically as ``<key>.json``; returns its path (held by us)."""
        path = self.directory / f"{key}.json"
        tmp = self.directory / f".{key}.{os.getpid()}.tmp"
        data = json.dumps(record, sort_keys=True).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, data)
            os.fsync(fd)
            os.replace(tmp, path)  # the lock travels with the inode
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with self._lock:
            old = self._held.pop(str(path), None)
            self._held[str(path)] = fd
        if old is not None:
            os.close(old)
        return str(path)

    def remove(self, path: str) -> None:
        """Forget a delivered notification: delete the file, then release our claim."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        with self._lock:
            fd = self._held.pop(path, None)
        if fd is not None:
            os.close(fd)

    def claim(self) -> list[tuple[str, dict[str, Any]]]:
        """Files no live process holds (left by a dead one): claimed and returned, oldest first."""
        out = []
        for path in sorted(self.directory.glob("*.json")):
            key = str(path)
            with self._lock:
                if key in self._held:
                    continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)  # a live process is delivering it
                    continue
            try:
                with open(fd, "rb", closefd=False) as fh:
                    record = json.loads(fh.read())
            except (OSError, ValueError):
                os.close(fd)
                continue  # a torn or foreign file; leave it for a person to look at
            with self._lock:
                self._held[key] = fd
            out.append((key, record))
        return out

    def pending(self) -> int:
        """How many notifications are on disk, ours or not."""
        return sum(1 for _ in self.directory.glob("*.json"))

    def release(self) -> None:
        """Give up our claims (files stay, for the next process)."""
        with self._lock:
            fds = list(self._held.values())
            self._held.clear()
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
