"""End to end, in real time: a leaking instrumented app, the runtime, real SMTP and webhook."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import urllib3
from requests.adapters import HTTPAdapter

import poolwatch
from poolwatch._runtime import Runtime, start
from poolwatch.alerts import SmtpSink

from .conftest import WebhookReceiver

Starter = Callable[..., Runtime]


@pytest.fixture
def runtimes() -> Iterator[Starter]:
    """start() that stops every runtime it started at teardown."""
    started: list[Runtime] = []

    def starter(config: dict[str, Any], **kwargs: Any) -> Runtime:
        runtime = start(config, **kwargs)
        started.append(runtime)
        return runtime

    yield starter
    for runtime in started:
        runtime.stop()


def _wait(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _config(label: str, smtp: dict[str, Any], webhook: str, **rules: Any) -> dict[str, Any]:
    return {
        "interval": "100ms",
        "pools": [label],
        "census": False,
        "log": False,
        "admin_url": "http://127.0.0.1:9091/",
        "rules": {"warning_for": 0, "leak_age": "1h", **rules},
        "smtp": {"sender": "poolwatch@test.local", "to": ["oncall@test.local"], **smtp},
        "webhook": {"url": webhook},
        "delivery": {"retry_base": "100ms", "retry_max": "500ms", "escalate_after": 2},
    }


def _leaky_get(session: requests.Session, url: str) -> requests.Response:
    return session.get(url, stream=True)  # the bug: a streamed 403 never read nor closed


@pytest.mark.parametrize("mode", ["plain", "starttls+auth"])
def test_leaking_app_crossing_75_percent_mails_and_posts(
    mode: str,
    downstream: tuple[str, int],
    webhook: WebhookReceiver,
    server_tls: ssl.SSLContext,
    ca_file: str,
    runtimes: Starter,
    tmp_path: Any,
) -> None:
    """3 of 4 connections leaked by requests: the e-mail and the webhook say what to act on."""
    host, port = downstream
    label = f"urllib3 http://{host}:{port}"
    if mode == "plain":
        sink = SmtpSink()
        smtp: dict[str, Any] = {"host": sink.host, "port": sink.port}
    else:
        sink = SmtpSink(tls=server_tls, login=("alerts", "pw-123"))
        smtp = {
            "host": sink.host,
            "port": sink.port,
            "security": "starttls",
            "username": "alerts",
            "password": "pw-123",
            "cafile": ca_file,
        }
    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=4, pool_block=True))
    held: list[requests.Response] = []
    with sink:
        runtime = runtimes(_config(label, smtp, webhook.url), spool=tmp_path / "spool")
        try:
            for _ in range(3):
                held.append(_leaky_get(session, f"http://{host}:{port}/api/charge"))
            assert sink.wait(1, timeout=20), runtime.ledger.entries(10)
            assert webhook.wait(1, timeout=20)
            assert runtime.dispatcher.flush(20)
        finally:
            for response in held:
                response.close()
            session.close()
        mail = sink.messages[0]
        body = mail.get_content()
    assert mail["Subject"] == (
        f"[poolwatch] FIRING warning: {label}: 3 of 4 connections leased (75%), threshold 75%"
    )
    assert f"Pool:         {label}" in body
    assert "Utilisation:  75% (3 leased" in body
    assert "Trend:" in body
    assert "3 x tests/alerts/test_e2e.py" in body
    assert "in _leaky_get: response 403 text/html, 45-byte body" in body
    assert "Admin:        http://127.0.0.1:9091/" in body
    assert "FIRING   PoolUtilisationHigh (warning) since 20" in body
    if mode != "plain":
        assert sink.logins == ["alerts"]
    payload = webhook.received[0].json()
    assert payload["kind"] == "firing"
    assert payload["facts"]["pool"] == label
    assert payload["facts"]["leased"] == 3
    assert payload["facts"]["max"] == 4
    assert payload["alerts"][0]["name"] == "PoolUtilisationHigh"
    assert "in _leaky_get" in payload["facts"]["callsites"][0]
    delivered = {e.channel for e in runtime.ledger.entries(50) if e.outcome == "delivered"}
    assert delivered == {"smtp", "webhook"}


def test_utilisation_oscillating_around_75_percent_does_not_flap(
    downstream: tuple[str, int], webhook: WebhookReceiver, runtimes: Starter
) -> None:
    """Real leases swinging 3/4 <-> 2/4 many times, inside the hysteresis band: one alert."""
    host, port = downstream
    label = f"urllib3 http://{host}:{port}"
    cfg = _config(label, {"host": "127.0.0.1", "port": 9}, webhook.url, hysteresis="30%")
    del cfg["smtp"]
    runtime = runtimes(cfg, spool=False)
    pool = urllib3.HTTPConnectionPool(host, port, maxsize=4, block=True)
    held = [pool.request("GET", "/", preload_content=False) for _ in range(2)]
    try:
        for _ in range(8):
            held.append(pool.request("GET", "/", preload_content=False))  # 3 of 4: 75%
            ticks = runtime.sampler.ticks
            assert _wait(lambda t=ticks: runtime.sampler.ticks >= t + 2)  # type: ignore[misc]
            extra = held.pop()
            extra.drain_conn()
            extra.release_conn()  # back to 2 of 4: 50%, above 75% - 30%
            ticks = runtime.sampler.ticks
            assert _wait(lambda t=ticks: runtime.sampler.ticks >= t + 2)  # type: ignore[misc]
        assert runtime.dispatcher.flush(10)
        kinds = [r.json()["kind"] for r in webhook.received]
        assert kinds == ["firing"]
        assert runtime.engine.firing(label) == {"PoolUtilisationHigh"}
    finally:
        for response in held:
            response.drain_conn()
            response.release_conn()
        pool.close()


def test_exhausted_inhibits_the_75_percent_alert(
    downstream: tuple[str, int], smtp: SmtpSink, webhook: WebhookReceiver, runtimes: Starter
) -> None:
    """A real EmptyPoolError fires PoolExhausted; the 75%/90% alerts fire silenced, never sent."""
    host, port = downstream
    label = f"urllib3 http://{host}:{port}"
    cfg = _config(label, {"host": smtp.host, "port": smtp.port}, webhook.url)
    cfg["rules"].update(warning_for="3s", critical_for="3s")
    runtime = runtimes(cfg, spool=False)
    # The engine evaluates once first: a pool it meets later is new, and the exhaustion below
    # counts (a pool already there at the first evaluation has it as history).
    assert _wait(lambda: runtime.engine.evaluations >= 1)
    pool = urllib3.HTTPConnectionPool(host, port, maxsize=4, block=True, timeout=5)
    held = [pool.request("GET", "/", preload_content=False) for _ in range(4)]
    try:
        with pytest.raises(urllib3.exceptions.EmptyPoolError):
            pool.urlopen("GET", "/", pool_timeout=0.05, retries=False)

        def warning_silenced() -> bool:
            alerts = {a.name: a for a in runtime.engine.active() if a.pool == label}
            high = alerts.get("PoolUtilisationHigh")
            return high is not None and high.state == "firing" and high.inhibited_by is not None

        assert _wait(warning_silenced)
        assert runtime.dispatcher.flush(10)
    finally:
        for response in held:
            response.drain_conn()
            response.release_conn()
        pool.close()
    subjects = [m["Subject"] for m in smtp.messages]
    assert len(subjects) == 1
    assert subjects[0].startswith(f"[poolwatch] FIRING critical: {label} is exhausted")
    names = [a["name"] for r in webhook.received for a in r.json()["alerts"]]
    assert names == ["PoolExhausted"]


def test_runtime_exposes_what_the_admin_app_reads(
    downstream: tuple[str, int], runtimes: Starter
) -> None:
    """The runtime has tracker, sampler.series, engine.active, ledger.entries/healthy."""
    host, port = downstream
    label = f"urllib3 http://{host}:{port}"
    runtime = runtimes({"interval": "50ms", "census": False, "pools": [label]}, spool=False)
    pool = urllib3.HTTPConnectionPool(host, port, maxsize=4)
    try:
        pool.request("GET", "/").close()
        series = f"leased/{label}"
        assert _wait(lambda: len(runtime.sampler.series(series)) >= 2)
    finally:
        pool.close()
    assert runtime.tracker is poolwatch.get_tracker()
    assert runtime.sampler.alive
    assert runtime.engine.active() == []
    assert runtime.ledger.healthy() == (True, "1 channel(s) delivering: log")
    assert runtime.ledger.entries(5) == []
    assert runtime.admin is None
    assert "Runtime [alive" in repr(runtime)
    runtime.stop()
    assert not runtime.sampler.alive


def test_admin_app_is_served_linked_and_shows_a_failing_channel(runtimes: Starter) -> None:
    """admin='127.0.0.1:0' serves the admin app, links it in alerts, and its health check
    turns 500 naming the channel once e-mail delivery fails."""
    import json
    import urllib.error
    import urllib.request

    from poolwatch.alerts._smtpsink import free_port

    smtp_port = free_port()
    runtime = runtimes(
        {
            "census": False,
            "log": False,
            "pools": ["none"],
            "smtp": {
                "host": "127.0.0.1",
                "port": smtp_port,
                "sender": "a@b.c",
                "to": ["d@e.f"],
                "timeout": 2,
            },
        },
        admin="127.0.0.1:0",
        instrument=False,
        spool=False,
    )
    assert runtime.admin is not None
    assert runtime.engine.admin_url == runtime.admin.url
    url = runtime.admin.url.rstrip("/") + "/healthcheck"

    def health() -> tuple[int, dict[str, Any]]:
        # Other checks (pool utilisation, recent exhaustions) see every pool of this test
        # process; only the alert-delivery check is this test's business.
        try:
            with urllib.request.urlopen(url) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read())

    _, before = health()
    assert before["alert_delivery"]["healthy"] is True
    (result,) = runtime.drill()
    assert not result.delivered
    status, after = health()
    assert status == 500
    assert after["alert_delivery"]["healthy"] is False
    message = after["alert_delivery"]["message"]
    assert message.startswith("smtp failing since")
    assert f"127.0.0.1:{smtp_port}" in message


def test_suspected_leak_is_reported_then_told_returned(
    downstream: tuple[str, int], webhook: WebhookReceiver, runtimes: Starter
) -> None:
    """A real lease held past leak_age fires SuspectedLeak naming its line; its return is told."""
    host, port = downstream
    label = f"urllib3 http://{host}:{port}"
    cfg = _config(label, {}, webhook.url, leak_age="300ms")
    del cfg["smtp"]
    runtimes(cfg, spool=False)
    pool = urllib3.HTTPConnectionPool(host, port, maxsize=10)
    try:
        response = pool.request("GET", "/slow-consumer", preload_content=False)
        try:
            assert webhook.wait(1, timeout=20)
        finally:
            response.drain_conn()
            response.release_conn()
        assert webhook.wait(2, timeout=20)
    finally:
        pool.close()
    fired, resolved = (r.json() for r in webhook.received[:2])
    assert fired["alerts"][0]["name"] == "SuspectedLeak"
    assert "1 connection(s) leased for longer than 0.3 s" in fired["alerts"][0]["summary"]
    assert "in test_suspected_leak_is_reported_then_told_returned" in fired["text"]
    assert resolved["kind"] == "resolved"
    assert "returned after" in resolved["text"]
    assert "in test_suspected_leak_is_reported_then_told_returned" in resolved["text"]


def test_scheduled_drills_run_from_the_config(webhook: WebhookReceiver, runtimes: Starter) -> None:
    """drill_every makes the runtime send marked test alerts on its own, recorded in the ledger."""
    runtime = runtimes(
        {
            "census": False,
            "log": False,
            "pools": ["none"],
            "drill_every": "100ms",
            "webhook": {"url": webhook.url},
        },
        instrument=False,
        spool=False,
    )
    assert webhook.wait(2, timeout=20)
    assert all(r.json()["drill"] for r in webhook.received)
    assert any(e.kind == "test" and e.outcome == "delivered" for e in runtime.ledger.entries(20))
