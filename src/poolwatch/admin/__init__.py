"""The admin app: health check, metrics, thread dump, leases, sockets and a dashboard.

Dropwizard's admin port for a Python process, pool-aware. ``make_app()`` is one WSGI app,
``make_asgi_app()`` the same for ASGI, ``serve()`` runs it on a background thread (loopback
unless told otherwise), ``mount()`` puts it under a prefix of another WSGI app. Importing
this package imports nothing outside the standard library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._app import AdminApp, BadRequest, make_app
from ._asgi import AsgiAdapter
from ._mount import mount
from ._server import AdminBindError, AdminServer, check_bind, parse_address, serve
from ._threads import dump_threads, format_threads, install_sigquit_handler

if TYPE_CHECKING:
    from .._tracker import Tracker

__all__ = [
    "AdminApp",
    "AdminBindError",
    "AdminServer",
    "AsgiAdapter",
    "BadRequest",
    "check_bind",
    "dump_threads",
    "format_threads",
    "install_sigquit_handler",
    "make_app",
    "make_asgi_app",
    "mount",
    "parse_address",
    "serve",
]


def make_asgi_app(
    runtime: Any = None,
    *,
    tracker: Tracker | None = None,
    token: str | None = None,
    **options: Any,
) -> AsgiAdapter:
    """The admin app as an ASGI 3 application (``app.mount("/poolwatch", make_asgi_app())``).

    Takes the same arguments as ``make_app``; requests are answered in a worker thread.
    """
    return AsgiAdapter(make_app(runtime, tracker=tracker, token=token, **options))
