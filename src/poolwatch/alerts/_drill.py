"""Drills: prove that alerts reach people before an incident needs them to.

``drill_channels`` sends a clearly marked test alert through every channel and reports, per
channel, delivered or failed with latency and reason. ``induce`` goes further: it creates real
pool pressure on a scratch urllib3 pool against a local downstream, so the whole path (tracker
-> sampler -> rule -> notifier -> ledger) fires end to end, then releases everything.
``demo_alert`` runs ``induce`` against an embedded SMTP server and returns the e-mail received.
"""

from __future__ import annotations

import dataclasses
import http.server
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._message import render
from ._model import Alert, Notification, format_wall
from ._notifiers import Channel

if TYPE_CHECKING:
    from .._config import Config
    from ._delivery import Dispatcher

__all__ = ["DrillResult", "demo_alert", "drill_channels", "induce", "drill_notification"]


@dataclass(frozen=True, slots=True)
class DrillResult:
    """One channel's answer to a drill."""

    channel: str
    delivered: bool
    latency: float | None
    detail: str
    describe_channel: str = ""

    def describe(self) -> str:
        took = f"{self.latency * 1000:.0f} ms" if self.latency is not None else "no answer"
        verdict = "delivered" if self.delivered else "FAILED"
        return f"{self.channel:<9} {verdict:<9} {took:>9}  {self.detail}"


def drill_notification(note: str = "") -> Notification:
    """The marked test alert a drill sends."""
    now = time.time()
    alert = Alert(
        "PoolwatchDrill",
        "info",
        "drill",
        "firing",
        "poolwatch drill: a test alert; if you read this, this channel works",
        now,
        fired_at=now,
    )
    facts: dict[str, Any] = {"notes": [note] if note else []}
    rendered = render("test", "drill", [alert], facts, drill=True, created=now)
    return dataclasses.replace(rendered, kind="test")


def drill_channels(
    dispatcher: Dispatcher, *, channels: Sequence[str] | None = None, timeout: float | None = None
) -> list[DrillResult]:
    """Send a test alert through each channel at once (in parallel); recorded in the ledger.

    ``timeout`` bounds the wait for all answers; a channel still silent then is reported failed.
    """
    note = drill_notification(f"drill started at {format_wall(time.time())}")
    names = list(channels) if channels is not None else list(dispatcher.workers)
    results: dict[str, DrillResult] = {}

    def one(name: str) -> None:
        attempt = dispatcher.send_now(note, name)
        results[name] = DrillResult(
            name,
            attempt.outcome == "delivered",
            attempt.latency,
            attempt.detail,
            dispatcher.workers[name].channel.describe(),
        )

    threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in names]
    for t in threads:
        t.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    for t in threads:
        t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
    return [
        results.get(n) or DrillResult(n, False, None, f"no answer within {timeout} s")
        for n in names
    ]


class _Downstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"drill downstream: this body is left unread on purpose\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass(frozen=True, slots=True)
class InduceReport:
    """What an induced drill saw: the pool, the notification and each channel's outcome."""

    pool: str
    crossed_at: float  # wall time the lease that crossed the threshold was taken
    notification: Notification | None
    results: tuple[DrillResult, ...]

    @property
    def ok(self) -> bool:
        return self.notification is not None and all(r.delivered for r in self.results)


def induce(
    config: Config | None = None,
    *,
    channels: Sequence[Channel] | None = None,
    size: int = 4,
    leak: int | None = None,
    interval: float = 0.2,
    timeout: float = 30.0,
    settle: float = 0.0,
) -> InduceReport:
    """Leak ``leak`` of ``size`` connections of a scratch urllib3 pool until the warning fires.

    The runtime watches only the scratch pool, with the utilisation warning at its configured
    threshold (``for`` set to 0) and every message marked as a drill; each channel's latency is
    from the lease that crossed the threshold to delivery. Everything is released afterwards.
    ``settle`` waits that long after the runtime started before leaking (a benchmark sets it
    at random so the crossing falls anywhere between two samples).
    """
    try:
        import urllib3
    except ImportError:  # pragma: no cover - extra not installed
        raise ImportError(
            "drill --induce needs urllib3: pip install 'poolwatch[urllib3]'"
        ) from None
    from .. import _api
    from .._config import Config, DeliveryConfig
    from .._runtime import start

    base = config or Config()
    threshold = base.rules.utilisation_warning
    leak = leak if leak is not None else max(1, -(-int(threshold * size * 1000) // 1000))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Downstream)
    server.daemon_threads = True
    serving = threading.Thread(target=server.serve_forever, name="poolwatch-drill-downstream")
    serving.daemon = True
    serving.start()
    port = server.server_address[1]
    label = f"urllib3 http://127.0.0.1:{port}"
    cfg = dataclasses.replace(
        base,
        interval=min(base.interval, interval),
        pools=(label,),
        census=False,
        admin=None,
        heartbeat=None,
        drill_every=None,
        rules=base.rules.replace(warning_for=0.0, critical_for=0.0),
        delivery=dataclasses.replace(base.delivery or DeliveryConfig(), spool=None),
    )
    notes: list[Notification] = []
    got = threading.Event()

    def sink(note: Notification) -> None:
        if note.kind == "firing" and not notes:
            notes.append(note)
            got.set()

    was_instrumented = "urllib3" in _api.instrumented()
    runtime = start(cfg, instrument=["urllib3"], channels=channels, spool=False)
    runtime.engine.drill = True
    runtime.engine.subscribe(sink)
    pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=size, block=True, timeout=5.0)
    held: list[Any] = []
    crossed = time.time()
    results: list[DrillResult] = []
    note: Notification | None = None
    try:
        if settle > 0:
            time.sleep(settle)
        for _ in range(leak):
            held.append(pool.request("GET", "/", preload_content=False, retries=False))
        crossed = time.time()
        got.wait(timeout)
        note = notes[0] if notes else None
        deadline = time.monotonic() + timeout
        if note is not None:
            for worker in runtime.dispatcher.workers.values():
                name = worker.channel.name
                entry = None
                while entry is None and time.monotonic() < deadline:
                    entry = next(
                        (
                            e
                            for e in runtime.ledger.entries(1000)
                            if e.notification == note.id
                            and e.channel == name
                            and e.outcome in ("delivered", "failed")
                        ),
                        None,
                    )
                    if entry is None:
                        time.sleep(0.01)
                if entry is None:
                    results.append(DrillResult(name, False, None, f"no answer within {timeout} s"))
                else:
                    results.append(
                        DrillResult(
                            name,
                            entry.outcome == "delivered",
                            entry.at - crossed,
                            entry.detail,
                            worker.channel.describe(),
                        )
                    )
    finally:
        for response in held:
            response.read()
            response.release_conn()
        pool.close()
        runtime.stop()
        if not was_instrumented:  # leave a process that was already watching as it was
            _api.uninstrument("urllib3")
        server.shutdown()
        server.server_close()
    return InduceReport(label, crossed, note, tuple(results))


def demo_alert(*, timeout: float = 30.0, size: int = 4) -> str:
    """Run an induced 75% drill against an embedded SMTP server; return the e-mail as text.

    For ``make demo``: needs aiosmtpd (the ``alerts`` extra) and urllib3.
    """
    from .._config import Config, SmtpConfig
    from ._smtpsink import SmtpSink

    with SmtpSink() as smtp:
        config = Config(
            log=False,
            smtp=SmtpConfig(
                host=smtp.host,
                port=smtp.port,
                sender="poolwatch@localhost",
                to=("oncall@localhost",),
            ),
        )
        report = induce(config, size=size, timeout=timeout)
        if not smtp.wait(1, timeout) or not report.ok:
            reasons = "; ".join(r.describe() for r in report.results) or "no alert fired"
            raise RuntimeError(f"the demo alert did not arrive: {reasons}")
        message = smtp.messages[0]
        return f"Subject: {message['Subject']}\nTo: {message['To']}\n\n{message.get_content()}"
