"""An embedded SMTP server (aiosmtpd) that keeps what it receives: for tests, drills, the demo.

Not part of the alert path (which is stdlib-only): importing this module needs the ``alerts``
extra (``pip install 'poolwatch[alerts]'``).
"""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
import threading
import time
from email.message import EmailMessage
from types import TracebackType
from typing import Any

__all__ = ["SmtpSink", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (aiosmtpd cannot bind port 0 itself)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class SmtpSink:
    """A real SMTP server on 127.0.0.1 that stores each accepted message.

    ``tls``: an ``ssl.SSLContext`` for STARTTLS (``require_starttls``) or, with
    ``implicit_tls=True``, for SMTPS. ``login=(user, password)`` requires AUTH (over TLS).
    ``messages`` holds the received ``EmailMessage`` objects; ``wait(n)`` blocks until n arrived.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        tls: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        login: tuple[str, str] | None = None,
    ) -> None:
        try:
            from aiosmtpd.controller import Controller
            from aiosmtpd.smtp import AuthResult, LoginPassword
        except ImportError:  # pragma: no cover - extra not installed
            raise ImportError("SmtpSink needs aiosmtpd: pip install 'poolwatch[alerts]'") from None
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.logins: list[str] = []
        self._cond = threading.Condition()
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                message = email.message_from_bytes(envelope.content, policy=email.policy.default)
                with sink._cond:
                    sink.messages.append(message)
                    sink.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
                    sink._cond.notify_all()
                return "250 Message accepted for delivery"

        def authenticator(
            server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
        ) -> Any:
            if not isinstance(auth_data, LoginPassword) or login is None:
                return AuthResult(success=False, handled=False)
            ok = (auth_data.login.decode(), auth_data.password.decode()) == login
            if ok:
                sink.logins.append(auth_data.login.decode())
            return AuthResult(success=ok, handled=False)

        kwargs: dict[str, Any] = {}
        if tls is not None and implicit_tls:
            kwargs["ssl_context"] = tls
        elif tls is not None:
            kwargs["tls_context"] = tls
            kwargs["require_starttls"] = True
        if login is not None:
            kwargs["authenticator"] = authenticator
            kwargs["auth_required"] = True
            kwargs["auth_require_tls"] = tls is not None
        self.security = "ssl" if implicit_tls else ("starttls" if tls is not None else "none")
        self._controller = Controller(Handler(), hostname=self.host, port=self.port, **kwargs)
        self.running = False

    def __repr__(self) -> str:
        return (
            f"<SmtpSink {self.host}:{self.port} ({self.security}) [{len(self.messages)} received]>"
        )

    def start(self) -> SmtpSink:
        self._controller.start()
        self.running = True
        return self

    def stop(self) -> None:
        if self.running:
            self._controller.stop()
            self.running = False

    def wait(self, count: int = 1, timeout: float = 10.0) -> bool:
        """Block until ``count`` messages were received (True) or ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
