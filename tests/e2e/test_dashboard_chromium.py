"""The dashboard in real headless Chromium: loads offline, shows the API's numbers, updates."""

from __future__ import annotations

import gc
import json
import os
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3

from poolwatch.admin import serve
from poolwatch.testing import Downstream, Reply

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def pool() -> Iterator[urllib3.HTTPConnectionPool]:
    """A urllib3 pool of 6 to a real 403-answering server on 127.0.0.1."""
    page = Reply(
        403, body=b"<html><body>Forbidden</body></html>", content_type="text/html; charset=utf-8"
    )
    with Downstream(default=page) as server:
        pool = urllib3.HTTPConnectionPool("127.0.0.1", server.port, maxsize=6, block=True)
        yield pool
        pool.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (never a downloaded browser)."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def _api_pool(url: str, label: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "pools", timeout=10) as response:
        pools = json.load(response)["pools"]
    return next(p for p in pools if p["label"] == label)


def _leak(pool: urllib3.HTTPConnectionPool, kept: list[Any]) -> None:
    kept.append(pool.request("GET", "/api/orders?page=2", preload_content=False))


@pytest.mark.allow_leaks(reason="one response is dropped on purpose: a confirmed leak to show")
def test_dashboard_shows_and_follows_a_leak(browser: Any, pool: urllib3.HTTPConnectionPool) -> None:
    """The page shows the leaking pool's numbers as the API reports them and follows a new leak."""
    label = f"urllib3 http://127.0.0.1:{pool.port}"
    kept: list[Any] = []
    for _ in range(3):
        _leak(pool, kept)
    pool.request("GET", "/api/orders?page=1", preload_content=False)  # dropped: confirmed leak
    gc.collect()
    admin = serve()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    requested: list[str] = []
    errors: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(admin.url)
        row = page.locator(f'tr[data-pool="{label}"]')
        expected = _api_pool(admin.url, label)
        assert expected["leased"] == 4
        assert expected["confirmed_leaks"] == 1
        # Locator assertions poll without eval(): the page's CSP (rightly) forbids it.
        leased = row.locator('td[data-field="leased"]')
        expect(leased).to_have_text(str(expected["leased"]), timeout=15_000)
        assert row.locator('td[data-field="max"]').text_content() == str(expected["max"])
        assert row.locator('td[data-field="confirmed_leaks"]').text_content() == "1"
        assert row.locator(".bar .label").text_content() == "67%"
        site = page.locator("#sites tbody tr").first
        assert "test_dashboard_chromium.py" in (site.text_content() or "")
        assert "403 text/html" in (site.text_content() or "")
        assert page.locator("#leases tbody tr").count() >= 3

        _leak(pool, kept)  # a new leak while the page is open
        expected = _api_pool(admin.url, label)
        assert expected["leased"] == 5
        expect(leased).to_have_text("5", timeout=15_000)
        expect(page.locator('#timeline path[data-series="leased"]')).to_have_count(
            1, timeout=15_000
        )
        page.click("#load-threads")
        expect(page.locator("#threads")).to_contain_text("Full thread dump", timeout=15_000)
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
    finally:
        page.close()
        admin.stop()
        for response in kept:
            response.drain_conn()
            response.release_conn()
    assert errors == []
    assert requested
    assert all(url.startswith(admin.url) for url in requested), requested


def test_dashboard_asks_for_the_token(browser: Any) -> None:
    """With a token, the page asks for it, then shows data once it is given."""
    admin = serve(token="tok-e2e-1234")
    page = browser.new_page()
    try:
        page.goto(admin.url)
        page.locator("#login").wait_for(state="visible", timeout=15_000)
        page.fill("#token", "tok-e2e-1234")
        page.click("#login-form button")
        expect(page.locator("#health")).to_have_text(
            re.compile(r"^(healthy|unhealthy)$"), timeout=15_000
        )
        assert page.locator("#login").is_hidden()
    finally:
        page.close()
        admin.stop()


def test_dashboard_with_a_runtime_shows_alerts_ledger_and_sampler_timeline(
    browser: Any, pool: urllib3.HTTPConnectionPool
) -> None:
    """Under poolwatch.start(), the page shows firing alerts, the ledger and the sampler's line."""
    runtime_module = pytest.importorskip("poolwatch._runtime")
    label = f"urllib3 http://127.0.0.1:{pool.port}"
    config = {"interval": 0.1, "rules": {"warning_for": 0, "critical_for": 0}}
    runtime = runtime_module.start(config, admin="127.0.0.1:0", spool=False)
    kept: list[Any] = []
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(runtime.admin.url)
        for _ in range(6):  # 6 of 6: exhausted by leaks
            _leak(pool, kept)
        alert = page.locator("#alerts .alert.firing", has_text=label).first
        expect(alert).to_be_visible(timeout=15_000)
        expect(page.locator("#ledger td", has_text="delivered").first).to_be_visible(timeout=15_000)
        expect(page.locator("#timeline-source")).to_have_text("(from the sampler)", timeout=15_000)
        expect(page.locator("#health")).to_have_text("unhealthy", timeout=15_000)
        expect(page.locator('[data-check="pools"]')).to_contain_text(
            f"{label}: 6 of 6 leased (100%)"
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-runtime.png"), full_page=True)
    finally:
        page.close()
        for response in kept:
            response.drain_conn()
            response.release_conn()
        runtime.stop()
