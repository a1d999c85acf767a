"""Mounting the admin app under a prefix of another WSGI application (Django, Flask ...)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["mount"]

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def mount(app: WsgiApp, admin: WsgiApp, prefix: str = "/poolwatch") -> WsgiApp:
    """A WSGI app sending ``prefix`` and below to ``admin`` and everything else to ``app``.

    For frameworks without their own mounting: ``application = mount(get_wsgi_application(),
    make_app())`` in Django's ``wsgi.py``. (Flask: werkzeug's ``DispatcherMiddleware`` does the
    same; Starlette/FastAPI: ``app.mount(prefix, make_asgi_app())``.)
    """
    prefix = "/" + prefix.strip("/")
    if prefix == "/":
        raise ValueError("mount prefix must not be '/': give a path such as '/poolwatch'")

    def dispatch(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or ""
        if path == prefix or path.startswith(prefix + "/"):
            environ = {
                **environ,
                "SCRIPT_NAME": environ.get("SCRIPT_NAME", "") + prefix,
                "PATH_INFO": path[len(prefix) :],
            }
            return admin(environ, start_response)
        return app(environ, start_response)

    return dispatch
