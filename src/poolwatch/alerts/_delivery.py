"""Delivery: every notification to every channel, retried until delivered, never lost.

One worker thread per channel, so a channel that hangs until its timeout never delays another.
A submitted notification is spooled to disk first (one file per channel), then attempted; a
failure is recorded in the ledger and retried with exponential back-off and jitter. After
``escalate_after`` consecutive failures a channel is declared failing: the fallback channels
(by default every other one) get a "channel failing" alert carrying the undelivered messages,
and again a "recovered" note when it delivers. Nothing here raises into the caller.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ._engine import PROCESS_GROUP, Engine
from ._ledger import Attempt, Ledger, Spool
from ._message import render
from ._model import Alert, Notification
from ._notifiers import Channel

__all__ = ["Dispatcher"]

log = logging.getLogger("poolwatch.alerts")

_order = itertools.count()


@dataclass(order=True, slots=True)
class _Job:
    due: float
    order: int
    notification: Notification = field(compare=False)
    channel: str = field(compare=False)
    submitted: float = field(compare=False)  # monotonic, for latency
    attempts: int = field(default=0, compare=False)
    path: str | None = field(default=None, compare=False)
    created_wall: float = field(default=0.0, compare=False)


class _Worker:
    def __init__(self, dispatcher: Dispatcher, channel: Channel) -> None:
        self.dispatcher = dispatcher
        self.channel = channel
        self.jobs: list[_Job] = []
        self.cond = threading.Condition()
        self.busy = False
        self.failing = False
        self.thread = threading.Thread(
            target=self.run, name=f"poolwatch-deliver-{channel.name}", daemon=True
        )

    def put(self, job: _Job) -> None:
        with self.cond:
            heapq.heappush(self.jobs, job)
            self.cond.notify()

    def idle(self) -> bool:
        with self.cond:
            return not self.jobs and not self.busy

    def run(self) -> None:
        d = self.dispatcher
        while True:
            with self.cond:
                while not d.stopping.is_set():
                    if self.jobs:
                        wait = self.jobs[0].due - d.clock()
                        if wait <= 0:
                            break
                        self.cond.wait(wait)
                    else:
                        self.cond.wait()
                if d.stopping.is_set():
                    return
                job = heapq.heappop(self.jobs)
                self.busy = True
            try:
                d.attempt(self, job)
            except Exception as exc:  # never let a bug kill delivery for good
                log.warning("poolwatch: delivery worker error: %r", exc, exc_info=exc)
                job.due = d.clock() + d.retry_max
                self.put(job)
            finally:
                with self.cond:
                    self.busy = False
                    self.cond.notify_all()


class Dispatcher:
    """Deliver notifications to ``channels`` with a ledger, a spool, retries and escalation.

    ``spool=None`` keeps undelivered notifications in memory only. ``fallback`` names the
    channels told when one fails (default: all the others). ``engine``, when given, shows a
    ``ChannelFailing`` alert while a channel fails. ``clock`` and ``rng`` are test seams.
    """

    def __init__(
        self,
        channels: Sequence[Channel],
        ledger: Ledger | None = None,
        *,
        spool: Spool | None = None,
        retry_base: float = 1.0,
        retry_max: float = 300.0,
        jitter: float = 0.2,
        escalate_after: int = 3,
        fallback: Sequence[str] | None = None,
        max_age: float = 7 * 86400.0,
        engine: Engine | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        names = [c.name for c in channels]
        if len(set(names)) != len(names):
            raise ValueError(f"alert channel names must be unique, got {names}")
        unknown = set(fallback or ()) - set(names)
        if unknown:
            raise ValueError(
                f"delivery.fallback names unknown channel(s) {sorted(unknown)}: "
                f"expected some of {names}"
            )
        self.ledger = ledger or Ledger()
        self.spool = spool
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.jitter = jitter
        self.escalate_after = max(1, escalate_after)
        self.fallback = list(fallback) if fallback is not None else None
        self.max_age = max_age
        self.engine = engine
        self.clock = clock
        self.rng = rng
        self.stopping = threading.Event()
        self.workers = {c.name: _Worker(self, c) for c in channels}
        for name in self.workers:
            self.ledger.register(name)
        self._started = False

    def __repr__(self) -> str:
        return f"<Dispatcher [{', '.join(self.workers)} | {self.pending()} pending]>"

    @property
    def channels(self) -> list[Channel]:
        return [w.channel for w in self.workers.values()]

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Dispatcher:
        """Start the workers and pick up what a previous process left in the spool."""
        if self._started:
            return self
        self._started = True
        for worker in self.workers.values():
            worker.thread.start()
        self.resume_spool()
        return self

    def resume_spool(self) -> int:
        """Queue spooled notifications no live process holds; returns how many."""
        if self.spool is None:
            return 0
        count = 0
        try:
            claimed = self.spool.claim()
        except OSError as exc:
            log.warning("poolwatch: cannot read the alert spool %s: %r", self.spool.directory, exc)
            return 0
        for path, record in claimed:
            try:
                note = Notification.from_dict(record["notification"])
                worker = self.workers.get(record["channel"])
            except (KeyError, TypeError, ValueError):
                continue
            if worker is None:
                continue  # a channel this process does not have: leave the file
            job = _Job(
                self.clock(),
                next(_order),
                note,
                worker.channel.name,
                self.clock(),
                int(record.get("attempts", 0)),
                path,
                note.created,
            )
            self.ledger.record(
                notification=note.id,
                kind=note.kind,
                subject=note.subject,
                channel=worker.channel.name,
                outcome="spooled",
                detail="resumed from the spool of an earlier process",
            )
            worker.put(job)
            count += 1
        return count

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the workers; undelivered notifications stay spooled for the next process."""
        self.stopping.set()
        for worker in self.workers.values():
            with worker.cond:
                worker.cond.notify_all()
        deadline = time.monotonic() + timeout
        for worker in self.workers.values():
            if worker.thread.is_alive():
                worker.thread.join(max(0.0, deadline - time.monotonic()))
        if self.spool is not None:
            self.spool.release()

    def pending(self) -> int:
        return sum(len(w.jobs) + (1 if w.busy else 0) for w in self.workers.values())

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until nothing is queued or in flight (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(w.idle() for w in self.workers.values()):
                return True
            time.sleep(0.01)
        return False

    # -- submitting --------------------------------------------------------------------------

    def submit(self, notification: Notification, channels: Sequence[str] | None = None) -> None:
        """Queue ``notification`` for each channel (all by default); never raises."""
        for name in channels if channels is not None else list(self.workers):
            worker = self.workers.get(name)
            if worker is None:
                continue
            try:
                self._enqueue(worker, notification)
            except Exception as exc:
                log.warning("poolwatch: could not queue an alert for %s: %r", name, exc)

    def _enqueue(self, worker: _Worker, note: Notification) -> None:
        job = _Job(
            self.clock(),
            next(_order),
            note,
            worker.channel.name,
            self.clock(),
            0,
            None,
            note.created,
        )
        detail = "queued in memory"
        if self.spool is not None:
            try:
                job.path = self.spool.write(self._key(job), self._record(job))
                detail = f"spooled to {job.path}"
            except OSError as exc:
                detail = f"could not spool ({exc!r}); queued in memory"
        self.ledger.record(
            notification=note.id,
            kind=note.kind,
            subject=note.subject,
            channel=worker.channel.name,
            outcome="spooled",
            detail=detail,
        )
        worker.put(job)

    @staticmethod
    def _key(job: _Job) -> str:
        return f"{int(job.created_wall * 1000):015d}-{job.notification.id}-{job.channel}"

    @staticmethod
    def _record(job: _Job) -> dict[str, object]:
        return {
            "channel": job.channel,
            "attempts": job.attempts,
            "notification": job.notification.to_dict(),
        }

    def send_now(self, notification: Notification, channel: str) -> Attempt:
        """Attempt one delivery in the caller's thread, recorded, without retries (drills)."""
        worker = self.workers[channel]
        start = time.monotonic()
        try:
            detail = worker.channel.send(notification)
            outcome = "delivered"
        except Exception as exc:
            detail, outcome = str(exc) or type(exc).__name__, "failed"
        return self.ledger.record(
            notification=notification.id,
            kind=notification.kind,
            subject=notification.subject,
            channel=channel,
            outcome=outcome,
            detail=detail,
            latency=time.monotonic() - start,
            attempt=1,
        )

    # -- one attempt (in the channel's worker) -----------------------------------------------

    def attempt(self, worker: _Worker, job: _Job) -> None:
        channel = worker.channel
        note = job.notification
        job.attempts += 1
        try:
            detail = channel.send(note)
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
            self.ledger.record(
                notification=note.id,
                kind=note.kind,
                subject=note.subject,
                channel=channel.name,
                outcome="failed",
                detail=reason,
                latency=self.clock() - job.submitted,
                attempt=job.attempts,
            )
            self._failed(worker, job, reason)
            return
        self.ledger.record(
            notification=note.id,
            kind=note.kind,
            subject=note.subject,
            channel=channel.name,
            outcome="delivered",
            detail=detail,
            latency=self.clock() - job.submitted,
            attempt=job.attempts,
        )
        if job.path is not None and self.spool is not None:
            self.spool.remove(job.path)
        if worker.failing:
            worker.failing = False
            self._channel_notice(worker, recovered=True, reason=detail)

    def _failed(self, worker: _Worker, job: _Job, reason: str) -> None:
        if time.time() - job.created_wall > self.max_age:
            self.ledger.record(
                notification=job.notification.id,
                kind=job.notification.kind,
                subject=job.notification.subject,
                channel=worker.channel.name,
                outcome="dropped",
                detail=f"undelivered after {job.attempts} attempts and {self.max_age:.0f} s",
            )
            if job.path is not None and self.spool is not None:
                self.spool.remove(job.path)
            return
        backoff = min(self.retry_max, self.retry_base * 2 ** (job.attempts - 1))
        backoff *= 1 + self.jitter * (2 * self.rng() - 1)  # jitter: no thundering herd
        job.due = self.clock() + max(0.0, backoff)
        if job.path is not None and self.spool is not None:
            # The attempt count on disk is informative only: a failed rewrite keeps the old file.
            with contextlib.suppress(OSError):
                job.path = self.spool.write(self._key(job), self._record(job))
        worker.put(job)
        health = self.ledger.channels().get(worker.channel.name)
        failures = health.consecutive_failures if health else job.attempts
        if not worker.failing and failures >= self.escalate_after:
            worker.failing = True
            self._channel_notice(worker, recovered=False, reason=reason)

    def _channel_notice(self, worker: _Worker, *, recovered: bool, reason: str) -> None:
        """Tell the fallback channels that ``worker``'s channel fails (or works again)."""
        name = worker.channel.name
        targets = [
            n
            for n in (self.fallback if self.fallback is not None else list(self.workers))
            if n != name and not self.workers[n].failing
        ]
        now = time.time()
        if recovered:
            alert = Alert(
                "ChannelFailing",
                "critical",
                PROCESS_GROUP,
                "resolved",
                f"alert channel {name} delivers again",
                now,
            )
            kind = "resolved"
        else:
            alert = Alert(
                "ChannelFailing",
                "critical",
                PROCESS_GROUP,
                "firing",
                f"alert channel {name} ({worker.channel.describe()}) is failing: {reason}",
                now,
                fired_at=now,
            )
            kind = "firing"
        with worker.cond:
            waiting = [j.notification for j in worker.jobs if j.notification.kind != "channel"]
        facts: dict[str, object] = {
            "channel": name,
            "notes": [f"undelivered on {name}: {n.subject}" for n in waiting[:10]],
        }
        note = render(kind, PROCESS_GROUP, [alert], facts, created=now)
        if waiting and not recovered:
            # Escalation: the undelivered messages themselves ride along on the fallback.
            body = note.text + "".join(
                f"\n--- undelivered on {name} ---\n{n.subject}\n{n.text}" for n in waiting[:5]
            )
            note = Notification(
                "channel", note.group, note.subject, body, note.alerts, note.facts, note.created
            )
        else:
            note = Notification(
                "channel",
                note.group,
                note.subject,
                note.text,
                note.alerts,
                note.facts,
                note.created,
            )
        if self.engine is not None:
            self.engine.set_external(None if recovered else alert, name=f"ChannelFailing:{name}")
        for n in waiting if not recovered else ():
            for target in targets:
                self.ledger.record(
                    notification=n.id,
                    kind=n.kind,
                    subject=n.subject,
                    channel=name,
                    outcome="escalated",
                    detail=f"sent to {target} inside the channel-failing alert",
                )
        log.warning("poolwatch: %s", note.subject)
        self.submit(note, targets)
