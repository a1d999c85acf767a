"""Heartbeat pings a dead-man's switch (healthchecks.io protocol): alive, /fail, and silence."""

from __future__ import annotations

import time
from collections.abc import Callable

from poolwatch._runtime import start
from poolwatch.alerts import Heartbeat, Ledger
from poolwatch.alerts._smtpsink import free_port

from .conftest import WebhookReceiver


def _wait(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_ping_when_healthy_and_fail_with_reason_when_not(webhook: WebhookReceiver) -> None:
    """A healthy check pings the URL; a broken one pings <url>/fail with the reason as body."""
    state = {"ok": True}
    ledger = Ledger()
    beat = Heartbeat(
        webhook.url, interval=60, check=lambda: (state["ok"], "smtp failing"), ledger=ledger
    )
    assert beat.ping()
    state["ok"] = False
    assert beat.ping()
    paths = [r.path for r in webhook.received]
    assert paths == ["/hooks/T000/secret-token", "/hooks/T000/secret-token/fail"]
    assert webhook.received[1].body == b"smtp failing"
    assert [e.outcome for e in ledger.entries(5)] == ["delivered", "delivered"]
    assert "secret-token" not in repr(beat)


def test_unreachable_switch_is_a_ledger_failure() -> None:
    """A ping that cannot reach the switch is recorded as failed, never raised."""
    ledger = Ledger()
    beat = Heartbeat(f"http://127.0.0.1:{free_port()}/ping/x", timeout=2, ledger=ledger)
    assert not beat.ping()
    (entry,) = ledger.entries(1)
    assert entry.outcome == "failed"
    assert entry.channel == "heartbeat"


def test_runtime_heartbeat_reports_a_failing_channel(webhook: WebhookReceiver) -> None:
    """The runtime's heartbeat turns to /fail while an alert channel fails, naming it."""
    runtime = start(
        {
            "census": False,
            "log": False,
            "interval": "50ms",
            "pools": ["none"],
            "smtp": {
                "host": "127.0.0.1",
                "port": free_port(),
                "sender": "a@b.c",
                "to": ["d@e.f"],
                "timeout": 2,
            },
            "heartbeat": {"url": webhook.url, "interval": "100ms"},
            "delivery": {"retry_base": "10s"},
        },
        instrument=False,
        spool=False,
    )
    try:
        assert webhook.wait(1, timeout=10, path="/hooks/T000/secret-token")
        runtime.drill()  # smtp fails: the process is now unhealthy
        assert webhook.wait(1, timeout=10, path="/hooks/T000/secret-token/fail")
    finally:
        runtime.stop()
    fail = webhook.matching("/hooks/T000/secret-token/fail")[0]
    assert fail.body.startswith(b"smtp failing since")
    ok, reason = runtime.healthy()
    assert not ok  # stopped: the sampler no longer runs
    assert "sampler is not running" in reason
