"""Channels against real servers: aiosmtpd (plain, STARTTLS, SMTPS, AUTH) and an HTTP receiver."""

from __future__ import annotations

import hashlib
import hmac
import logging
import ssl

import pytest

from poolwatch.alerts import (
    DeliveryError,
    LogChannel,
    Secret,
    SmtpChannel,
    SmtpSink,
    WebhookChannel,
    drill_notification,
    redact_url,
)
from poolwatch.alerts._smtpsink import free_port

from .conftest import WebhookReceiver


def _smtp(sink: SmtpSink, **kwargs: object) -> SmtpChannel:
    return SmtpChannel(
        sink.host,
        sink.port,
        "poolwatch@test.local",
        ["oncall@test.local"],
        **kwargs,  # type: ignore[arg-type]
    )


def test_smtp_plain_delivers_and_confirms(smtp: SmtpSink) -> None:
    """A plain SMTP server accepts the mail; send() returns the 250 confirmation."""
    note = drill_notification()
    detail = _smtp(smtp).send(note)
    assert detail.startswith("250 accepted")
    assert smtp.wait(1, timeout=5)
    message = smtp.messages[0]
    assert message["Subject"] == note.subject
    assert message["X-Poolwatch-Notification"] == note.id
    assert message["X-Poolwatch-Drill"] == "yes"
    assert "THIS IS A DRILL" in message.get_content()
    assert smtp.envelopes[0] == ("poolwatch@test.local", ["oncall@test.local"])


def test_smtp_starttls_with_login(server_tls: ssl.SSLContext, ca_file: str) -> None:
    """STARTTLS plus AUTH LOGIN against a server that requires both; the CA file is trusted."""
    with SmtpSink(tls=server_tls, login=("alerts", "s3cret")) as sink:
        channel = _smtp(
            sink, security="starttls", username="alerts", password=Secret("s3cret"), cafile=ca_file
        )
        channel.send(drill_notification())
        assert sink.wait(1, timeout=5)
        assert sink.logins == ["alerts"]


def test_smtp_starttls_refuses_an_untrusted_certificate(server_tls: ssl.SSLContext) -> None:
    """Without the private CA, certificate verification fails and says so (no silent downgrade)."""
    with SmtpSink(tls=server_tls) as sink:
        with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
            _smtp(sink, security="starttls").send(drill_notification())
        assert sink.messages == []


def test_smtp_implicit_tls(server_tls: ssl.SSLContext, ca_file: str) -> None:
    """SMTPS (TLS from the first byte) delivers."""
    with SmtpSink(tls=server_tls, implicit_tls=True) as sink:
        _smtp(sink, security="ssl", cafile=ca_file).send(drill_notification())
        assert sink.wait(1, timeout=5)


def test_smtp_wrong_password_fails_without_showing_it(
    server_tls: ssl.SSLContext, ca_file: str
) -> None:
    """A refused login is a failure naming the user and the server's answer, not the password."""
    with SmtpSink(tls=server_tls, login=("alerts", "s3cret")) as sink:
        channel = _smtp(
            sink,
            security="starttls",
            username="alerts",
            password=Secret("wrong-pw"),
            cafile=ca_file,
        )
        with pytest.raises(DeliveryError) as info:
            channel.send(drill_notification())
        assert "login as 'alerts' refused: 535" in str(info.value)
        assert "wrong-pw" not in str(info.value)
        assert "wrong-pw" not in repr(channel.password)
        assert sink.messages == []


def test_smtp_server_down_is_a_failure_with_the_reason() -> None:
    """Nothing listening: the failure names host, port and the connection error."""
    port = free_port()
    channel = SmtpChannel("127.0.0.1", port, "a@b.c", ["d@e.f"], timeout=2)
    with pytest.raises(DeliveryError, match=rf"127.0.0.1:{port}: ConnectionRefusedError"):
        channel.send(drill_notification())


def test_webhook_json_signed(webhook: WebhookReceiver) -> None:
    """The JSON payload carries the notification; the HMAC signature verifies with the secret."""
    note = drill_notification()
    channel = WebhookChannel(webhook.url, secret=Secret("hook-key"))
    assert channel.send(note).startswith("200 from http://127.0.0.1:")
    (got,) = webhook.received
    payload = got.json()
    assert payload["id"] == note.id
    assert payload["kind"] == "test"
    assert payload["drill"] is True
    assert payload["alerts"][0]["name"] == "PoolwatchDrill"
    stamp = got.headers["X-Poolwatch-Timestamp"]
    expected = hmac.new(b"hook-key", stamp.encode() + b"." + got.body, hashlib.sha256).hexdigest()
    assert got.headers["X-Poolwatch-Signature"] == f"sha256={expected}"


def test_webhook_slack_format(webhook: WebhookReceiver) -> None:
    """format='slack' posts a {"text": ...} body with the subject in bold."""
    note = drill_notification()
    WebhookChannel(webhook.url, format="slack").send(note)
    payload = webhook.received[0].json()
    assert set(payload) == {"text"}
    assert payload["text"].startswith(f"*{note.subject}*")


def test_webhook_non_2xx_is_a_failure_and_hides_the_token(webhook: WebhookReceiver) -> None:
    """A 500 answer fails with the status; the token in the URL path is never shown."""
    webhook.status = 500
    with pytest.raises(DeliveryError) as info:
        WebhookChannel(webhook.url).send(drill_notification())
    assert "answered 500" in str(info.value)
    assert "secret-token" not in str(info.value)
    assert "secret-token" not in WebhookChannel(webhook.url).describe()


def test_redact_url_keeps_host_only() -> None:
    """Webhook and ping URLs keep their scheme, host and port; path and query are hidden."""
    assert redact_url("https://hooks.example.com/services/T0/B0/XyZ?x=1") == (
        "https://hooks.example.com/..."
    )
    assert redact_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"


def test_log_channel_logs_the_alert(caplog: pytest.LogCaptureFixture) -> None:
    """The log channel writes the subject and body to the poolwatch.alerts logger."""
    note = drill_notification()
    with caplog.at_level(logging.INFO, logger="poolwatch.alerts"):
        LogChannel().send(note)
    assert note.subject in caplog.text
