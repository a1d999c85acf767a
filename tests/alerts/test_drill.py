"""`poolwatch drill` and the drill helpers against working and broken channels."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from poolwatch.alerts import SmtpSink, demo_alert, induce
from poolwatch.alerts._smtpsink import free_port
from poolwatch.cli import _build

from .conftest import WebhookReceiver


def _write_config(tmp_path: Path, smtp_port: int, webhook_url: str) -> Path:
    path = tmp_path / "drill.toml"
    path.write_text(
        "log = false\n"
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\nsender = "p@test.local"\n'
        'to = ["oncall@test.local"]\ntimeout = 2\n'
        f'[webhook]\nurl = "{webhook_url}"\n'
    )
    return path


def test_drill_reports_a_working_and_a_broken_channel(
    tmp_path: Path, webhook: WebhookReceiver
) -> None:
    """SMTP down, webhook up: webhook delivered, smtp FAILED with the reason, exit code 1."""
    port = free_port()
    config = _write_config(tmp_path, port, webhook.url)
    result = CliRunner().invoke(_build(), ["drill", "--config", str(config)])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    smtp_line = next(line for line in lines if line.startswith("smtp "))
    webhook_line = next(line for line in lines if line.startswith("webhook "))
    assert " FAILED " in smtp_line
    assert f"127.0.0.1:{port}: ConnectionRefusedError" in smtp_line
    assert " delivered " in webhook_line
    assert " ms " in webhook_line
    assert "secret-token" not in result.output
    (got,) = webhook.received
    assert got.json()["drill"] is True
    assert got.json()["subject"].startswith("[poolwatch DRILL]")


def test_drill_all_working_exits_zero(
    tmp_path: Path, webhook: WebhookReceiver, smtp: SmtpSink
) -> None:
    """Every channel delivers: exit code 0, and the e-mail is marked as a drill."""
    config = _write_config(tmp_path, smtp.port, webhook.url)
    result = CliRunner().invoke(_build(), ["drill", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert smtp.wait(1, timeout=10)
    assert smtp.messages[0]["X-Poolwatch-Drill"] == "yes"
    assert "THIS IS A DRILL" in smtp.messages[0].get_content()


def test_drill_bad_config_exits_2_with_the_reason(tmp_path: Path) -> None:
    """A config error is printed with key and value, exit code 2."""
    path = tmp_path / "bad.toml"
    path.write_text('interval = "often"\n')
    result = CliRunner().invoke(_build(), ["drill", "--config", str(path)])
    assert result.exit_code == 2
    assert "interval = 'often' is not allowed" in result.output


def test_drill_schedule_runs_count_times(tmp_path: Path, webhook: WebhookReceiver) -> None:
    """--every with --count runs the drill that many times."""
    path = tmp_path / "d.toml"
    path.write_text(f'log = false\n[webhook]\nurl = "{webhook.url}"\n')
    result = CliRunner().invoke(
        _build(), ["drill", "--config", str(path), "--every", "10ms", "--count", "3"]
    )
    assert result.exit_code == 0, result.output
    assert len(webhook.received) == 3


def test_drill_induce_fires_the_real_rule(tmp_path: Path, webhook: WebhookReceiver) -> None:
    """--induce pushes a scratch pool to 75%: the real rule fires and the webhook gets it."""
    path = tmp_path / "d.toml"
    path.write_text(f'log = false\n[webhook]\nurl = "{webhook.url}"\n')
    result = CliRunner().invoke(_build(), ["drill", "--config", str(path), "--induce"])
    assert result.exit_code == 0, result.output
    assert "induced: [poolwatch DRILL] FIRING warning: urllib3 http://127.0.0.1:" in result.output
    payload = webhook.received[0].json()
    assert payload["alerts"][0]["name"] == "PoolUtilisationHigh"
    assert payload["facts"]["leased"] == 3
    assert payload["drill"] is True


def test_induce_reports_a_broken_channel() -> None:
    """An induced drill with SMTP down reports smtp not delivered, with the reason."""
    from poolwatch._config import Config, SmtpConfig

    port = free_port()
    cfg = Config(
        log=False,
        smtp=SmtpConfig(host="127.0.0.1", port=port, sender="a@b.c", to=("d@e.f",), timeout=2),
    )
    report = induce(cfg, timeout=20)
    assert report.notification is not None
    assert not report.ok
    (result,) = report.results
    assert result.channel == "smtp"
    assert not result.delivered
    assert "ConnectionRefusedError" in result.detail


def test_demo_alert_returns_the_75_percent_mail() -> None:
    """demo_alert() receives the 75% e-mail on an embedded SMTP server and returns it."""
    text = demo_alert(timeout=20)
    assert text.startswith("Subject: [poolwatch DRILL] FIRING warning: urllib3 http://127.0.0.1:")
    assert "3 of 4 connections leased (75%)" in text
    assert "Held by (call sites of leased connections, most first):" in text


@pytest.mark.parametrize("channel", ["pager"])
def test_drill_unknown_channel_is_refused(tmp_path: Path, channel: str) -> None:
    """--channel naming an unconfigured channel lists the configured ones."""
    path = tmp_path / "d.toml"
    path.write_text("log = true\n")
    result = CliRunner().invoke(_build(), ["drill", "--config", str(path), "--channel", channel])
    assert result.exit_code == 2
    assert "pager not configured; configured: log" in result.output
