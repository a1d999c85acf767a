"""Delivery: ledger, spool, retries, escalation; an SMTP outage; a killed process's alert."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import urllib3

from poolwatch._runtime import start
from poolwatch.alerts import (
    Dispatcher,
    Ledger,
    LogChannel,
    SmtpChannel,
    SmtpSink,
    Spool,
    WebhookChannel,
    drill_notification,
)
from poolwatch.alerts._smtpsink import free_port

from .conftest import WebhookReceiver

HERE = Path(__file__).parent


def _wait(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_ledger_health_follows_the_last_attempt() -> None:
    """A failure makes the ledger unhealthy, naming channel and reason; a delivery heals it."""
    ledger = Ledger()
    ledger.register("smtp")
    assert ledger.healthy() == (True, "1 channel(s) delivering: smtp")
    ledger.record(
        notification="n1",
        kind="firing",
        subject="s",
        channel="smtp",
        outcome="failed",
        detail="SMTP 127.0.0.1:25: ConnectionRefusedError",
    )
    ok, why = ledger.healthy()
    assert not ok
    assert why.startswith("smtp failing since ")
    assert why.endswith("(1 attempt(s)): SMTP 127.0.0.1:25: ConnectionRefusedError")
    ledger.record(
        notification="n1", kind="firing", subject="s", channel="smtp", outcome="delivered"
    )
    assert ledger.healthy()[0]
    assert [e.outcome for e in ledger.entries(10)] == ["delivered", "failed"]
    assert ledger.counts() == {("smtp", "failed"): 1, ("smtp", "delivered"): 1}


def test_spool_round_trip_and_claims(tmp_path: Path) -> None:
    """A spooled record is a file; a live owner's files are not claimed; release frees them."""
    spool = Spool(tmp_path)
    path = spool.write("k1", {"channel": "smtp", "notification": {"x": 1}})
    assert json.loads(Path(path).read_text())["channel"] == "smtp"
    assert spool.claim() == []  # held by us already
    other = Spool(tmp_path)
    if sys.platform != "win32":
        assert other.claim() == []  # held by a live owner (flock)
    spool.release()
    claimed = other.claim()
    assert [p for p, _ in claimed] == [path]
    other.remove(path)
    assert spool.pending() == 0


def test_retries_with_backoff_until_the_server_comes_back(spool_dir: Path) -> None:
    """With the SMTP server down, attempts fail and are retried; once it is up, it is delivered."""
    port = free_port()
    channel = SmtpChannel("127.0.0.1", port, "a@test.local", ["b@test.local"], timeout=2)
    ledger = Ledger()
    dispatcher = Dispatcher(
        [channel], ledger, spool=Spool(spool_dir), retry_base=0.05, retry_max=0.2, jitter=0.5
    ).start()
    try:
        note = drill_notification()
        dispatcher.submit(note)
        assert _wait(lambda: ledger.channels()["smtp"].failed >= 3)
        assert len(list(spool_dir.glob("*.json"))) == 1
        with SmtpSink(port=port) as sink:
            assert sink.wait(1, timeout=20)
            assert dispatcher.flush(20)
    finally:
        dispatcher.stop()
    outcomes = [e.outcome for e in reversed(ledger.entries(100)) if e.notification == note.id]
    assert outcomes[0] == "spooled"
    assert outcomes[-1] == "delivered"
    assert outcomes.count("failed") >= 3
    assert list(spool_dir.glob("*.json")) == []


def test_smtp_outage_then_recovery_with_the_webhook_told(
    downstream: tuple[str, int], webhook: WebhookReceiver, spool_dir: Path
) -> None:
    """E-mail down while a pool crosses 75%: the webhook hears the alert and that e-mail fails;
    the server comes back; the alert arrives by e-mail; the ledger shows failures then delivery."""
    host, port = downstream
    label = f"urllib3 http://{host}:{port}"
    smtp_port = free_port()
    runtime = start(
        {
            "interval": "100ms",
            "census": False,
            "log": False,
            "pools": [label],
            "rules": {"warning_for": 0, "leak_age": "1h"},
            "smtp": {
                "host": "127.0.0.1",
                "port": smtp_port,
                "sender": "p@test.local",
                "to": ["oncall@test.local"],
                "timeout": 2,
            },
            "webhook": {"url": webhook.url},
            "delivery": {"retry_base": "100ms", "retry_max": "300ms", "escalate_after": 2},
        },
        spool=spool_dir,
    )
    pool = urllib3.HTTPConnectionPool(host, port, maxsize=4, block=True)
    held = [pool.request("GET", "/", preload_content=False) for _ in range(3)]
    try:
        # The webhook gets the alert itself, then the channel-failing alert carrying it.
        assert webhook.wait(2, timeout=20)
        assert not runtime.ledger.healthy()[0]
        assert any(a.name == "ChannelFailing" for a in runtime.engine.active())
        with SmtpSink(port=smtp_port) as sink:
            assert sink.wait(1, timeout=20)
            assert runtime.dispatcher.flush(20)
            assert webhook.wait(3, timeout=20)  # ... and the recovery
        assert runtime.ledger.healthy()[0]
    finally:
        for response in held:
            response.drain_conn()
            response.release_conn()
        pool.close()
        runtime.stop()
    payloads = [r.json() for r in webhook.received]
    assert payloads[0]["alerts"][0]["name"] == "PoolUtilisationHigh"
    failing = payloads[1]
    assert failing["kind"] == "channel"
    assert failing["alerts"][0]["name"] == "ChannelFailing"
    assert f"alert channel smtp (smtp://127.0.0.1:{smtp_port}" in failing["subject"]
    assert "--- undelivered on smtp ---" in failing["text"]
    assert label in failing["text"]
    assert payloads[2]["alerts"][0]["state"] == "resolved"
    assert "alert channel smtp delivers again" in payloads[2]["subject"]
    assert sink.messages[0]["Subject"].startswith(f"[poolwatch] FIRING warning: {label}")
    alert_id = payloads[0]["id"]
    smtp_log = [
        e.outcome
        for e in reversed(runtime.ledger.entries(200))
        if e.notification == alert_id and e.channel == "smtp"
    ]
    assert smtp_log[0] == "spooled"
    assert smtp_log.count("failed") >= 2
    assert "escalated" in smtp_log
    assert smtp_log[-1] == "delivered"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_alert_of_a_killed_process_is_delivered_by_the_next_start(
    downstream: tuple[str, int], spool_dir: Path
) -> None:
    """The service is SIGKILLed with its alert undelivered; the next start delivers it."""
    host, port = downstream
    smtp_port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "_leaky_service.py"),
            str(smtp_port),
            host,
            str(port),
            str(spool_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert line.startswith("UNDELIVERED "), line
    alert_id = line.split()[1]
    spooled = list(spool_dir.glob("*.json"))
    assert len(spooled) == 1
    assert alert_id in spooled[0].name
    with SmtpSink(port=smtp_port) as sink:
        runtime = start(
            {
                "census": False,
                "log": False,
                "pools": ["none"],
                "smtp": {
                    "host": "127.0.0.1",
                    "port": smtp_port,
                    "sender": "p@test.local",
                    "to": ["oncall@test.local"],
                },
                "delivery": {"spool": str(spool_dir)},
            },
            instrument=False,
        )
        try:
            assert sink.wait(1, timeout=20)
            assert runtime.dispatcher.flush(20)
        finally:
            runtime.stop()
    mail = sink.messages[0]
    assert mail["X-Poolwatch-Notification"] == alert_id
    assert f"urllib3 http://{host}:{port}: 3 of 4 connections leased (75%)" in mail["Subject"]
    outcomes = [e.outcome for e in reversed(runtime.ledger.entries(10))]
    assert outcomes == ["spooled", "delivered"]
    assert "resumed from the spool" in runtime.ledger.entries(10)[-1].detail
    assert list(spool_dir.glob("*.json")) == []


def test_fallback_names_must_exist() -> None:
    """A fallback naming an unknown channel is refused, listing the known ones."""
    with pytest.raises(
        ValueError, match=r"unknown channel\(s\) \['pager'\]: expected some of \['log'\]"
    ):
        Dispatcher([LogChannel()], fallback=["pager"])


def test_submit_never_raises_for_a_broken_channel(webhook: WebhookReceiver) -> None:
    """A channel that raises is a ledger failure, not an exception in the caller."""
    webhook.status = 503
    ledger = Ledger()
    dispatcher = Dispatcher([WebhookChannel(webhook.url)], ledger, retry_base=10).start()
    try:
        dispatcher.submit(drill_notification())
        assert _wait(lambda: ledger.channels()["webhook"].failed >= 1)
    finally:
        dispatcher.stop()
    assert "answered 503" in (ledger.channels()["webhook"].last_error or "")
