"""Channels: SMTP, webhook and log. Each ``send`` either confirms delivery or raises.

"Delivered" means the other side accepted the message: the SMTP server answered 250 to the
end of DATA (``smtplib.sendmail`` raises otherwise, and reports refused recipients), or the
webhook answered 2xx. Anything else raises ``DeliveryError`` with a reason a person can act on.
Only the standard library is used, so the alert path has no third-party failure mode.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Protocol

from .._errors import PoolwatchError
from ._model import Notification

__all__ = [
    "Channel",
    "DeliveryError",
    "LogChannel",
    "Secret",
    "SmtpChannel",
    "WebhookChannel",
    "redact_url",
]

log = logging.getLogger("poolwatch.alerts")


class DeliveryError(PoolwatchError):
    """A channel could not confirm delivery; the message says why."""


class Secret:
    """A password or key that never shows in a repr, a log line or an error message."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))

    def __bool__(self) -> bool:
        return bool(self._value)


def redact_url(url: str) -> str:
    """Scheme, host and port only: webhook and ping URLs carry their secret in the path."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        tail = "/..." if parts.path not in ("", "/") or parts.query else ""
        return f"{parts.scheme}://{host}{port}{tail}"
    except ValueError:
        return "<unparsable url>"


class Channel(Protocol):
    """Where notifications go. ``send`` returns a short confirmation or raises."""

    name: str

    def send(self, notification: Notification) -> str: ...

    def describe(self) -> str: ...


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _said(exc: smtplib.SMTPResponseException) -> str:
    said: bytes | str = exc.smtp_error
    return said.decode(errors="replace") if isinstance(said, bytes) else str(said)


class SmtpChannel:
    """E-mail through an SMTP server: plain, STARTTLS or implicit TLS, with optional login.

    ``security`` is ``"none"``, ``"starttls"`` or ``"ssl"``. ``cafile`` trusts a private CA
    (certificate checks stay on; there is no switch to turn them off).
    """

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        to: Sequence[str],
        *,
        security: str = "none",
        username: str | None = None,
        password: Secret | None = None,
        timeout: float = 10.0,
        cafile: str | None = None,
        name: str = "smtp",
    ) -> None:
        if security not in ("none", "starttls", "ssl"):
            raise ValueError(f"smtp security = {security!r}: expected none, starttls or ssl")
        if not to:
            raise ValueError("smtp.to is empty: expected at least one recipient address")
        self.name = name
        self.host = host
        self.port = port
        self.sender = sender
        self.to = list(to)
        self.security = security
        self.username = username
        self.password = password
        self.timeout = timeout
        self.cafile = cafile

    def __repr__(self) -> str:
        return f"<SmtpChannel {self.describe()}>"

    def describe(self) -> str:
        auth = f", login {self.username}" if self.username else ""
        return f"smtp://{self.host}:{self.port} ({self.security}{auth}) to {', '.join(self.to)}"

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.cafile)

    def message(self, notification: Notification) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = notification.subject
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.to)
        msg["Date"] = formatdate(notification.created, localtime=False, usegmt=True)
        # The same id on every retry: a receiver that saw a first attempt can deduplicate.
        msg["Message-ID"] = make_msgid(idstring=notification.id, domain="poolwatch")
        msg["X-Poolwatch-Notification"] = notification.id
        msg["X-Poolwatch-Kind"] = notification.kind
        if notification.drill:
            msg["X-Poolwatch-Drill"] = "yes"
        msg.set_content(notification.text)
        return msg

    def send(self, notification: Notification) -> str:
        msg = self.message(notification)
        try:
            client: smtplib.SMTP
            if self.security == "ssl":
                client = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=self._context()
                )
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with client:
                if self.security == "starttls":
                    client.starttls(context=self._context())
                if self.username:
                    client.login(self.username, self.password.reveal() if self.password else "")
                refused = client.send_message(msg, self.sender, self.to)
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(
                f"SMTP login as {self.username!r} refused: {exc.smtp_code} {_said(exc)}"
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"SMTP server answered {exc.smtp_code} {_said(exc)}") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"SMTP {self.host}:{self.port}: {_reason(exc)}") from None
        if refused:
            raise DeliveryError(f"SMTP server refused recipients: {sorted(refused)}")
        return f"250 accepted by {self.host}:{self.port} for {len(self.to)} recipient(s)"


class WebhookChannel:
    """JSON POSTed to a URL; ``format="slack"`` posts Slack's ``{"text": ...}`` shape.

    With ``secret``, the body is signed: ``X-Poolwatch-Signature: sha256=<hex HMAC of
    "<timestamp>.<body>">`` and ``X-Poolwatch-Timestamp``, so a receiver can reject forgeries
    and replays.
    """

    def __init__(
        self,
        url: str,
        *,
        format: str = "json",
        secret: Secret | None = None,
        timeout: float = 10.0,
        cafile: str | None = None,
        name: str = "webhook",
    ) -> None:
        if format not in ("json", "slack"):
            raise ValueError(f"webhook format = {format!r}: expected json or slack")
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise ValueError(
                f"webhook url {redact_url(url)!r}: expected an http:// or https:// URL"
            )
        self.name = name
        self.url = url
        self.format = format
        self.secret = secret
        self.timeout = timeout
        self.cafile = cafile

    def __repr__(self) -> str:
        return f"<WebhookChannel {self.describe()}>"

    def describe(self) -> str:
        signed = ", signed" if self.secret else ""
        return f"{redact_url(self.url)} ({self.format}{signed})"

    def payload(self, notification: Notification) -> dict[str, Any]:
        if self.format == "slack":
            return {"text": f"*{notification.subject}*\n```\n{notification.text}```"}
        return {"version": 1, **notification.to_dict()}

    def send(self, notification: Notification) -> str:
        body = json.dumps(self.payload(notification), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "poolwatch-alerts",
            "X-Poolwatch-Notification": notification.id,
        }
        if self.secret:
            stamp = str(int(time.time()))
            mac = hmac.new(
                self.secret.reveal().encode(), stamp.encode() + b"." + body, hashlib.sha256
            )
            headers["X-Poolwatch-Timestamp"] = stamp
            headers["X-Poolwatch-Signature"] = f"sha256={mac.hexdigest()}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        context = ssl.create_default_context(cafile=self.cafile) if self.cafile else None
        where = redact_url(self.url)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=context) as resp:
                status = resp.status
                resp.read(65536)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise DeliveryError(f"webhook {where} answered {exc.code} {exc.reason}") from None
        except (OSError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            text = _reason(reason) if isinstance(reason, BaseException) else str(reason)
            raise DeliveryError(f"webhook {where}: {text}") from None
        if not 200 <= status < 300:
            raise DeliveryError(f"webhook {where} answered {status}")
        return f"{status} from {where}"


class LogChannel:
    """Notifications as log records on the ``poolwatch.alerts`` logger (always delivered)."""

    def __init__(self, *, logger: logging.Logger | None = None, name: str = "log") -> None:
        self.name = name
        self.logger = logger or log

    def __repr__(self) -> str:
        return f"<LogChannel {self.logger.name}>"

    def describe(self) -> str:
        return f"logger {self.logger.name!r}"

    def send(self, notification: Notification) -> str:
        level = logging.ERROR if notification.severity == "critical" else logging.WARNING
        if notification.kind == "resolved" or notification.drill:
            level = logging.INFO
        self.logger.log(level, "%s\n%s", notification.subject, notification.text)
        return f"logged at {logging.getLevelName(level)}"
