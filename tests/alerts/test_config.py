"""One validated config: TOML file, [tool.poolwatch], environment; clear errors; hidden secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from poolwatch._config import Config, ConfigError, config_from_mapping, load_config
from poolwatch._runtime import build_channels
from poolwatch.alerts import Secret

TOML = """
interval = "500ms"
pools = ["urllib3 *"]
[rules]
utilisation_warning = "70%"
warning_for = "1m30s"
[smtp]
host = "mail.internal"
security = "starttls"
sender = "poolwatch@example.com"
to = ["oncall@example.com"]
username = "poolwatch"
[webhook]
url = "https://hooks.example.com/services/T0/B0/XyZsecret"
format = "slack"
[heartbeat]
url = "https://hc.example.com/ping/0b1c-uuid"
interval = "1m"
"""


def test_toml_file_is_read_and_typed(tmp_path: Path) -> None:
    """Durations, percentages and sections become typed values; STARTTLS defaults to port 587."""
    (tmp_path / "poolwatch.toml").write_text(TOML)
    cfg = load_config(cwd=tmp_path, env={})
    assert cfg.interval == 0.5
    assert cfg.pools == ("urllib3 *",)
    assert cfg.rules.utilisation_warning == pytest.approx(0.70)
    assert cfg.rules.warning_for == 90.0
    assert cfg.smtp is not None
    assert (cfg.smtp.host, cfg.smtp.port, cfg.smtp.security) == ("mail.internal", 587, "starttls")
    assert cfg.webhook is not None
    assert cfg.webhook.format == "slack"
    assert cfg.heartbeat is not None
    assert cfg.heartbeat.interval == 60.0
    assert [c.name for c in build_channels(cfg)] == ["smtp", "webhook", "log"]


def test_pyproject_table_then_env_override(tmp_path: Path) -> None:
    """[tool.poolwatch] is read; POOLWATCH_* variables override it, including secrets."""
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "svc"\n[tool.poolwatch]\ninterval = 2\n'
        '[tool.poolwatch.smtp]\nhost = "a"\nsender = "p@x.io"\nto = ["o@x.io"]\nusername = "u"\n'
    )
    env = {
        "POOLWATCH_INTERVAL": "3s",
        "POOLWATCH_SMTP_PASSWORD": "hunter2",
        "POOLWATCH_RULES_UTILISATION_CRITICAL": "95%",
        "POOLWATCH_SMTP_TO": "a@x.io, b@x.io",
        "POOLWATCH_SOMETHING_ELSE": "not ours",
    }
    cfg = load_config(cwd=tmp_path, env=env)
    assert cfg.interval == 3.0
    assert cfg.rules.utilisation_critical == pytest.approx(0.95)
    assert cfg.smtp is not None
    assert cfg.smtp.to == ("a@x.io", "b@x.io")
    assert cfg.smtp.password == Secret("hunter2")
    assert "hunter2" not in repr(cfg)
    assert "hunter2" not in cfg.describe()


def test_bad_value_names_source_key_value_and_what_is_allowed(tmp_path: Path) -> None:
    """A bad value's error says where it came from, the key, the value and what is allowed."""
    (tmp_path / "poolwatch.toml").write_text('[rules]\nutilisation_warning = "175%"\n')
    with pytest.raises(ConfigError) as info:
        load_config(cwd=tmp_path, env={})
    message = str(info.value)
    assert "poolwatch.toml" in message
    assert "rules.utilisation_warning = '175%' is not allowed" in message
    assert (
        'expected a fraction between 0 and 1 such as 0.75, or a percentage such as "75%"' in message
    )


def test_bad_env_duration_is_named() -> None:
    """An environment value that is not a duration names the variable."""
    with pytest.raises(
        ConfigError, match=r"\$POOLWATCH_INTERVAL: interval = 'soon' is not allowed"
    ):
        load_config(cwd="/nonexistent-dir-for-test", env={"POOLWATCH_INTERVAL": "soon"})


def test_unknown_key_lists_the_known_ones() -> None:
    """A typo is an error listing the keys that exist in that section."""
    with pytest.raises(ConfigError, match=r"unknown key 'smtp.hots': expected one of cafile, host"):
        config_from_mapping({"smtp": {"hots": "x"}})


def test_secret_values_are_never_echoed_in_errors() -> None:
    """A bad secret's error hides its value."""
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"webhook": {"url": "https://h.example/x", "secret": ""}})
    assert "webhook.secret = '***' (hidden) is not allowed" in str(info.value)


def test_token_bearing_urls_are_redacted_in_errors_and_reprs() -> None:
    """A webhook URL's path (the credential of Slack-style hooks) never shows."""
    cfg = config_from_mapping({"webhook": {"url": "https://hooks.example.com/T0/B0/XyZsecret"}})
    assert "XyZsecret" not in repr(cfg)
    assert "XyZsecret" not in cfg.describe()
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"heartbeat": {"url": "ftp://hc.example.com/ping/uuid-secret"}})
    assert "uuid-secret" not in str(info.value)


def test_incomplete_section_says_what_is_missing() -> None:
    """An [smtp] table without recipients names the missing keys."""
    with pytest.raises(ConfigError, match=r"\[smtp\] is incomplete: missing sender, to"):
        config_from_mapping({"smtp": {"host": "mail"}})


def test_password_env_indirection(monkeypatch: pytest.MonkeyPatch) -> None:
    """smtp.password_env names the variable holding the password; unset is a clear error."""
    monkeypatch.setenv("MAIL_PW", "pw-from-env")
    base = {"host": "m", "sender": "a@b.c", "to": ["d@e.f"], "username": "u"}
    cfg = config_from_mapping({"smtp": {**base, "password_env": "MAIL_PW"}})
    assert cfg.smtp is not None
    assert cfg.smtp.password is not None
    assert cfg.smtp.password.reveal() == "pw-from-env"
    with pytest.raises(
        ConfigError, match="names the environment variable NOPE_UNSET, which is not set"
    ):
        config_from_mapping({"smtp": {**base, "password_env": "NOPE_UNSET"}})


def test_fallback_must_name_a_configured_channel() -> None:
    """delivery.fallback naming a channel that is not configured is refused."""
    with pytest.raises(
        ConfigError, match=r"delivery.fallback names 'webhook', which is not configured"
    ):
        config_from_mapping({"delivery": {"fallback": ["webhook"]}})


def test_defaults() -> None:
    """With nothing configured: 1 s interval, 75%/90%, the log channel only."""
    cfg = Config()
    assert (cfg.interval, cfg.rules.utilisation_warning, cfg.rules.utilisation_critical) == (
        1.0,
        0.75,
        0.90,
    )
    assert cfg.channel_names() == ["log"]
