"""The admin app over a real ``poolwatch.start()`` runtime: timeline, alerts, ledger, checks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import Leaker, get

runtime_module = pytest.importorskip("poolwatch._runtime")


@pytest.fixture
def runtime() -> Iterator[Any]:
    """poolwatch.start() with a fast sampler, quick rules, the log channel and the admin app."""
    config = {
        "interval": 0.05,
        "rules": {"warning_for": 0, "critical_for": 0, "leak_age": 3600},
    }
    rt = runtime_module.start(config, admin="127.0.0.1:0", spool=False)
    yield rt
    rt.stop()


def _wait_for(fetch: Any, ok: Any, seconds: float = 10.0) -> Any:
    deadline = time.monotonic() + seconds
    value = fetch()
    while not ok(value) and time.monotonic() < deadline:
        time.sleep(0.05)
        value = fetch()
    return value


def test_start_serves_the_admin_app(runtime: Any) -> None:
    """start(admin=...) serves this admin app, and its health checks include the runtime's."""
    assert runtime.admin.url.startswith("http://127.0.0.1:")
    checks = get(runtime.admin.url + "healthcheck").json()
    assert checks["sampler"] == {"healthy": True, "message": "sampling"}
    assert checks["alert_delivery"]["healthy"] is True


def test_dashboard_shows_timeline_alerts_and_ledger(runtime: Any, leaker: Leaker) -> None:
    """With a runtime, dashboard.json carries the sampler's timeline, firing alerts and ledger."""
    leaker.leak(4)  # 4 of 4: utilisation 100%
    url = runtime.admin.url + "dashboard.json"
    data = _wait_for(
        lambda: get(url).json(),
        lambda d: (
            any(a["pool"] == leaker.label and a["state"] == "firing" for a in d["alerts"])
            and d["ledger"]
        ),
    )
    leased = data["timeline"]["pools"][leaker.label]["leased"]
    assert leased
    assert leased[-1][1] == 4
    firing = [a for a in data["alerts"] if a["pool"] == leaker.label and a["state"] == "firing"]
    assert firing, data["alerts"]
    assert {entry["channel"] for entry in data["ledger"]} == {"log"}
    assert data["ledger"][0]["outcome"] == "delivered"
    metrics = get(runtime.admin.url + "metrics").text
    assert 'poolwatch_alert_notifications_total{channel="log",outcome="delivered"}' in metrics
    leaker.release()


def test_sampler_stopped_fails_the_healthcheck(runtime: Any) -> None:
    """A stopped sampler turns /healthcheck 500 with the reason."""
    runtime.sampler.stop()
    reply = get(runtime.admin.url + "healthcheck")
    assert reply.status == 500
    assert reply.json()["sampler"]["healthy"] is False


def test_start_binds_beyond_loopback_only_when_told() -> None:
    """admin beyond loopback is refused, naming admin_public; with it, the bind is attempted.

    192.0.2.10 (TEST-NET-1) is on no interface here: once allowed, the bind fails locally, so
    nothing ever listens beyond loopback during the test.
    """
    import poolwatch
    from poolwatch.admin import AdminBindError

    with pytest.raises(AdminBindError, match="admin_public = true"):
        poolwatch.start({"log": False}, admin="192.0.2.10:0", instrument=False, spool=False)
    unassigned = r"cannot serve the poolwatch admin app on 192\.0\.2\.10"
    with pytest.raises(AdminBindError, match=unassigned):
        poolwatch.start(
            {"log": False, "admin_public": True, "admin_token": "s3cret-token-value"},
            admin="192.0.2.10:0",
            instrument=False,
            spool=False,
        )
