"""The admin app mounted into Flask, Starlette, FastAPI and Django, each serving real HTTP."""

from __future__ import annotations

import threading
import time
import wsgiref.simple_server
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import urllib3

from poolwatch.admin import make_app, make_asgi_app, mount

from .conftest import get


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve_wsgi(app: Callable[..., Any]) -> Iterator[str]:
    server = wsgiref.simple_server.make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="host-app", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _serve_asgi(app: Any) -> Iterator[str]:
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


class Downstream:
    """A pool the host app leaks into, released at teardown."""

    def __init__(self, base: str) -> None:
        port = int(base.rsplit(":", 1)[1])
        self.pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=4)
        self.kept: list[Any] = []
        self.label = f"urllib3 http://127.0.0.1:{port}"

    def leak(self) -> str:
        self.kept.append(self.pool.request("GET", "/403", preload_content=False))
        return "leaked"

    def close(self) -> None:
        for response in self.kept:
            response.drain_conn()
            response.release_conn()
        self.pool.close()


@pytest.fixture
def down(downstream: str) -> Iterator[Downstream]:
    target = Downstream(downstream)
    yield target
    target.close()


def _check_mounted(base: str, down: Downstream) -> None:
    """The host app's own route works, leaks, and the admin app under /poolwatch shows it."""
    assert get(base + "/leak").text == "leaked"
    leases = get(base + "/poolwatch/leases").json()["leases"]
    assert down.label in {lease["pool"] for lease in leases}
    health = get(base + "/poolwatch/healthcheck")
    # 200 or 500 depends on every pool of this test process; the checks are what is mounted.
    assert health.status in (200, 500)
    assert {"pools", "exhaustion"} <= set(health.json())
    page = get(base + "/poolwatch/")
    assert page.status == 200
    assert 'src="static/dashboard.js"' in page.text
    assert get(base + "/poolwatch/static/dashboard.js").status == 200
    metrics = get(base + "/poolwatch/metrics")
    assert f'pool="{down.label}"' in metrics.text
    assert get(base + "/poolwatch/nope").status == 404


def test_flask(down: Downstream) -> None:
    """Flask with werkzeug's DispatcherMiddleware serves the admin app under /poolwatch."""
    from flask import Flask
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    app = Flask("host")
    app.add_url_rule("/leak", "leak", down.leak)
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/poolwatch": make_app()})  # type: ignore[method-assign]
    for base in _serve_wsgi(app):
        _check_mounted(base, down)
        redirect = get(base + "/poolwatch")  # urllib follows the redirect to the slash
        assert redirect.status == 200
        assert 'src="static/dashboard.js"' in redirect.text


def test_starlette(down: Downstream) -> None:
    """Starlette's Mount serves the ASGI adapter; its loop's tasks show in /threads."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    def leak(request: Any) -> PlainTextResponse:
        return PlainTextResponse(down.leak())

    app = Starlette(routes=[Route("/leak", leak), Mount("/poolwatch", app=make_asgi_app())])
    for base in _serve_asgi(app):
        _check_mounted(base, down)
        dump = get(base + "/poolwatch/threads").text
        assert 'asyncio tasks of the event loop running on "uvicorn"' in dump


def test_fastapi(down: Downstream) -> None:
    """FastAPI's app.mount serves the ASGI adapter."""
    fastapi = pytest.importorskip("fastapi")
    from starlette.responses import PlainTextResponse

    app = fastapi.FastAPI()

    @app.get("/leak")
    def leak() -> PlainTextResponse:
        return PlainTextResponse(down.leak())

    app.mount("/poolwatch", make_asgi_app())
    for base in _serve_asgi(app):
        _check_mounted(base, down)


_DOWN: list[Downstream] = []


def _django_leak(request: Any) -> Any:
    from django.http import HttpResponse

    return HttpResponse(_DOWN[-1].leak(), content_type="text/plain")


def _django_app() -> Any:
    import django
    from django.conf import settings
    from django.urls import path

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="tests-only",
            ALLOWED_HOSTS=["127.0.0.1"],
            ROOT_URLCONF=__name__,
            INSTALLED_APPS=[],
            MIDDLEWARE=[],
            USE_TZ=True,
        )
        django.setup()
    globals()["urlpatterns"] = [path("leak", _django_leak)]
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def test_django(down: Downstream) -> None:
    """Django's WSGI application, wrapped by poolwatch.admin.mount, serves /poolwatch."""
    _DOWN.append(down)
    try:
        application = mount(_django_app(), make_app(), "/poolwatch")
        for base in _serve_wsgi(application):
            _check_mounted(base, down)
            assert get(base + "/missing").status == 404  # Django's own 404, not ours
    finally:
        _DOWN.remove(down)


def test_mount_rejects_root_prefix() -> None:
    """Mounting at '/' would hide the host app entirely: refused with a clear message."""
    with pytest.raises(ValueError, match="must not be '/'"):
        mount(make_app(), make_app(), "/")


def test_asgi_app_served_alone() -> None:
    """make_asgi_app() is a complete ASGI app: uvicorn serves it with lifespan on."""
    for base in _serve_asgi(make_asgi_app()):
        assert get(base + "/ping").text == "pong\n"
        assert get(base + "/leases?min_age=x").status == 400
