"""One validated configuration for the watching runtime (sampler, rules, channels).

Sources, weakest first: built-in defaults, ``[tool.poolwatch]`` in ``pyproject.toml``, a TOML
file (``poolwatch.toml`` in the working directory, or the path in ``POOLWATCH_CONFIG``, or the
path given), environment variables (``POOLWATCH_INTERVAL``, ``POOLWATCH_SMTP_HOST``,
``POOLWATCH_SMTP_PASSWORD`` ...: ``POOLWATCH_<SECTION>_<KEY>``), then explicit overrides.

A bad value raises ``ConfigError`` naming the source, the key, the value and what is allowed.
Secrets (``smtp.password``, ``webhook.secret``, ``admin_token``) are held as ``Secret`` and
never printed; URLs that carry a token in their path (webhooks, pings) are shown redacted.

Example ``poolwatch.toml``::

    interval = "1s"
    [rules]
    utilisation_warning = "75%"
    warning_for = "30s"
    [smtp]
    host = "mail.internal"
    port = 587
    security = "starttls"
    sender = "poolwatch@example.com"
    to = ["oncall@example.com"]
    username = "poolwatch"          # password from POOLWATCH_SMTP_PASSWORD
    [webhook]
    url = "https://hooks.example.com/services/T000/B000/XXXX"
    format = "slack"
    [heartbeat]
    url = "https://hc.example.com/ping/your-uuid"
    interval = "1m"
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import PoolwatchError
from .alerts._notifiers import Secret, redact_url
from .alerts._rules import ALERT_NAMES, Rules

__all__ = [
    "Config",
    "ConfigError",
    "DeliveryConfig",
    "HeartbeatConfig",
    "SmtpConfig",
    "WebhookConfig",
    "load_config",
]


class ConfigError(PoolwatchError, ValueError):
    """A configuration value is not allowed; the message names key, value and what is."""


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    sender: str
    to: tuple[str, ...]
    port: int = 25
    security: str = "none"
    username: str | None = None
    password: Secret | None = None
    timeout: float = 10.0
    cafile: str | None = None


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    format: str = "json"
    secret: Secret | None = None
    timeout: float = 10.0
    cafile: str | None = None

    def __repr__(self) -> str:  # the URL path is often the credential (Slack, Teams)
        return (
            f"WebhookConfig(url={redact_url(self.url)!r}, format={self.format!r}, "
            f"secret={self.secret!r}, timeout={self.timeout!r})"
        )


@dataclass(frozen=True)
class HeartbeatConfig:
    url: str
    interval: float = 60.0
    timeout: float = 10.0

    def __repr__(self) -> str:
        return f"HeartbeatConfig(url={redact_url(self.url)!r}, interval={self.interval!r})"


@dataclass(frozen=True)
class DeliveryConfig:
    retry_base: float = 1.0
    retry_max: float = 300.0
    escalate_after: int = 3
    fallback: tuple[str, ...] | None = None
    spool: str | None = None
    max_age: float = 7 * 86400.0


@dataclass(frozen=True)
class Config:
    """Everything ``poolwatch.start()`` needs. Build with ``load_config()`` or directly."""

    interval: float = 1.0
    history: int = 3600
    pools: tuple[str, ...] = ()
    census: bool = True
    log: bool = True
    admin: str | None = None
    admin_token: Secret | None = None
    admin_url: str | None = None
    #: Serve the admin app beyond loopback when ``admin`` names such an address (never implied).
    admin_public: bool = False
    drill_every: float | None = None
    rules: Rules = field(default_factory=Rules)
    smtp: SmtpConfig | None = None
    webhook: WebhookConfig | None = None
    heartbeat: HeartbeatConfig | None = None
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    source: str = "defaults"

    def channel_names(self) -> list[str]:
        names = []
        if self.smtp:
            names.append("smtp")
        if self.webhook:
            names.append("webhook")
        if self.log:
            names.append("log")
        return names

    def describe(self) -> str:
        """A summary safe to print: no secret, no token-bearing URL path."""
        parts = [f"interval {self.interval:g} s", f"source {self.source}"]
        if self.smtp:
            parts.append(
                f"smtp {self.smtp.host}:{self.smtp.port} ({self.smtp.security}) to "
                + ", ".join(self.smtp.to)
            )
        if self.webhook:
            parts.append(f"webhook {redact_url(self.webhook.url)} ({self.webhook.format})")
        if self.heartbeat:
            parts.append(f"heartbeat {redact_url(self.heartbeat.url)}")
        return "; ".join(parts)


# -- value parsers ---------------------------------------------------------------------------


class _Bad(Exception):
    """A parser's verdict: the text says what is allowed."""


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|min|s|m|h|d)")


def _duration(value: Any) -> float:
    allowed = 'seconds as a number, or a duration such as "500ms", "30s", "5m", "1h30m", "1d"'
    if isinstance(value, bool):
        raise _Bad(allowed)
    if isinstance(value, (int, float)):
        if value < 0:
            raise _Bad(allowed + " (not negative)")
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        try:
            return _duration(float(text))
        except ValueError:
            pass
        pos, total = 0, 0.0
        for match in _DURATION.finditer(text):
            if match.start() != pos:
                raise _Bad(allowed)
            total += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos == len(text) and text:
            return total
    raise _Bad(allowed)


def _positive_duration(value: Any) -> float:
    seconds = _duration(value)
    if seconds <= 0:
        raise _Bad('a duration greater than zero, such as 1 or "1s"')
    return seconds


def _fraction(value: Any) -> float:
    allowed = 'a fraction between 0 and 1 such as 0.75, or a percentage such as "75%"'
    if isinstance(value, bool):
        raise _Bad(allowed)
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            raise _Bad(allowed) from None
    elif isinstance(value, (int, float)):
        number = float(value)
    else:
        raise _Bad(allowed)
    if not 0 <= number <= 1:
        raise _Bad(allowed)
    return number


def _int(lo: int, hi: int | None = None) -> Callable[[Any], int]:
    allowed = f"a whole number >= {lo}" + (f" and <= {hi}" if hi is not None else "")

    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise _Bad(allowed)
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise _Bad(allowed) from None
        if isinstance(value, float) and value != number:
            raise _Bad(allowed)
        if number < lo or (hi is not None and number > hi):
            raise _Bad(allowed)
        return number

    return parse


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise _Bad("true or false")


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad("a non-empty string")
    return value.strip()


def _str_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, (list, tuple)):
        items = [v.strip() if isinstance(v, str) else v for v in value]
    else:
        raise _Bad('a list of strings (in the environment: comma-separated, "a,b")')
    if not all(isinstance(v, str) and v for v in items):
        raise _Bad('a list of non-empty strings (in the environment: comma-separated, "a,b")')
    return tuple(items)


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value.strip().lower() not in choices:
            raise _Bad("one of " + ", ".join(choices))
        return value.strip().lower()

    return parse


def _url(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^/\s]+", value.strip()):
        raise _Bad("an http:// or https:// URL")
    return value.strip()


def _hostport(value: Any) -> str:
    allowed = 'HOST:PORT such as "127.0.0.1:9091" (port 0 picks a free one)'
    if not isinstance(value, str):
        raise _Bad(allowed)
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise _Bad(allowed)
    return value.strip()


def _secret(value: Any) -> Secret:
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str) or not value:
        raise _Bad("a non-empty string")
    return Secret(value)


def _alert_names(value: Any) -> frozenset[str]:
    names = _str_list(value)
    unknown = [n for n in names if n not in ALERT_NAMES]
    if unknown:
        raise _Bad("alert names among " + ", ".join(ALERT_NAMES))
    return frozenset(names)


def _email_list(value: Any) -> tuple[str, ...]:
    items = _str_list(value)
    if not items or not all("@" in i for i in items):
        raise _Bad('a list of e-mail addresses such as ["oncall@example.com"]')
    return items


def _email(value: Any) -> str:
    text = _str(value)
    if "@" not in text:
        raise _Bad('an e-mail address such as "poolwatch@example.com"')
    return text


_Parser = Callable[[Any], Any]

#: section -> key -> parser. "" is the top level. Secret keys are listed in _SECRETS.
_SCHEMA: dict[str, dict[str, _Parser]] = {
    "": {
        "interval": _positive_duration,
        "history": _int(2, 1_000_000),
        "pools": _str_list,
        "census": _bool,
        "log": _bool,
        "admin": _hostport,
        "admin_token": _secret,
        "admin_url": _url,
        "admin_public": _bool,
        "drill_every": _positive_duration,
    },
    "rules": {
        "utilisation_warning": _fraction,
        "utilisation_critical": _fraction,
        "warning_for": _duration,
        "critical_for": _duration,
        "hysteresis": _fraction,
        "exhausted_hold": _duration,
        "hang_after": _duration,
        "leak_age": _duration,
        "trend_window": _positive_duration,
        "trend_min_points": _int(2),
        "predict_horizon": _duration,
        "close_wait_growth": _int(0),
        "close_wait_window": _positive_duration,
        "repeat_interval": _positive_duration,
        "disabled": _alert_names,
    },
    "smtp": {
        "host": _str,
        "port": _int(1, 65535),
        "sender": _email,
        "to": _email_list,
        "security": _choice("none", "starttls", "ssl"),
        "username": _str,
        "password": _secret,
        "timeout": _positive_duration,
        "cafile": _str,
    },
    "webhook": {
        "url": _url,
        "format": _choice("json", "slack"),
        "secret": _secret,
        "timeout": _positive_duration,
        "cafile": _str,
    },
    "heartbeat": {
        "url": _url,
        "interval": _positive_duration,
        "timeout": _positive_duration,
    },
    "delivery": {
        "retry_base": _positive_duration,
        "retry_max": _positive_duration,
        "escalate_after": _int(1, 1000),
        "fallback": _str_list,
        "spool": _str,
        "max_age": _positive_duration,
    },
}
_SECRETS = {("", "admin_token"), ("smtp", "password"), ("webhook", "secret")}
_URLS = {("", "admin_url"), ("webhook", "url"), ("heartbeat", "url")}
#: ``<key>_env = "VAR"`` reads a secret from another environment variable.
_SECRET_ENV = {f"{key}_env": key for _section, key in _SECRETS}


def _show(section: str, key: str, value: Any) -> str:
    if (section, key) in _SECRETS:
        return "'***' (hidden)"
    if (section, key) in _URLS and isinstance(value, str):
        return repr(redact_url(value))
    return repr(value)


def _dotted(section: str, key: str) -> str:
    return f"{section}.{key}" if section else key


def _load_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib  # type: ignore[import-not-found]
        except ImportError:
            raise ConfigError(
                f"{path}: reading TOML on Python 3.10 needs tomli: pip install tomli"
            ) from None
    try:
        with path.open("rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return data


def _tool_table(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    table = data.get("tool", {}).get("poolwatch", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.poolwatch] must be a table")
    return table


class _Builder:
    """Collects raw values per (section, key) with the source each came from."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], tuple[Any, str]] = {}

    def merge_table(self, table: Mapping[str, Any], source: str) -> None:
        for key, value in table.items():
            if isinstance(value, Mapping):
                if key not in _SCHEMA or key == "":
                    raise ConfigError(
                        f"{source}: unknown section [{key}]: expected one of "
                        + ", ".join(f"[{s}]" for s in _SCHEMA if s)
                    )
                for sub, subvalue in value.items():
                    self.set(key, sub, subvalue, source)
            else:
                self.set("", key, value, source)

    def set(self, section: str, key: str, value: Any, source: str) -> None:
        if key in _SECRET_ENV and (section, _SECRET_ENV[key]) in _SECRETS:
            var = _str(value) if isinstance(value, str) else None
            if var is None:
                raise ConfigError(
                    f"{source}: {_dotted(section, key)} = {value!r} is not allowed: expected "
                    "the name of an environment variable"
                )
            secret = os.environ.get(var)
            if not secret:
                raise ConfigError(
                    f"{source}: {_dotted(section, key)} names the environment variable {var}, "
                    "which is not set or empty: set it, or remove the key"
                )
            self.values[(section, _SECRET_ENV[key])] = (Secret(secret), f"{source} (via ${var})")
            return
        known = _SCHEMA.get(section)
        if known is None or key not in known:
            allowed = ", ".join(sorted(known or {}))
            raise ConfigError(
                f"{source}: unknown key {_dotted(section, key)!r}: expected one of {allowed}"
            )
        self.values[(section, key)] = (value, source)

    def merge_env(self, env: Mapping[str, str]) -> None:
        sections = sorted((s for s in _SCHEMA if s), key=len, reverse=True)
        for var, raw in env.items():
            if not var.startswith("POOLWATCH_") or var == "POOLWATCH_CONFIG":
                continue
            rest = var[len("POOLWATCH_") :].lower()
            for section in sections:
                if rest.startswith(section + "_") and rest[len(section) + 1 :] in _SCHEMA[section]:
                    self.values[(section, rest[len(section) + 1 :])] = (raw, f"${var}")
                    break
            else:
                if rest in _SCHEMA[""]:
                    self.values[("", rest)] = (raw, f"${var}")
                # Other POOLWATCH_* variables belong to other parts of poolwatch: not ours.

    def parse(self) -> dict[tuple[str, str], Any]:
        out = {}
        for (section, key), (value, source) in self.values.items():
            try:
                out[(section, key)] = _SCHEMA[section][key](value)
            except _Bad as bad:
                raise ConfigError(
                    f"{source}: {_dotted(section, key)} = {_show(section, key, value)} is not "
                    f"allowed: expected {bad}"
                ) from None
        return out

    def source_of(self, section: str, key: str) -> str:
        return self.values.get((section, key), (None, "defaults"))[1]


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Read, merge and validate the configuration (see the module docstring for sources)."""
    env = os.environ if env is None else env
    base = Path(cwd) if cwd is not None else Path.cwd()
    builder = _Builder()
    sources = []
    pyproject = base / "pyproject.toml"
    if pyproject.is_file():
        table = _tool_table(pyproject, _load_toml(pyproject))
        if table:
            builder.merge_table(table, f"{pyproject} [tool.poolwatch]")
            sources.append(str(pyproject))
    chosen = path if path is not None else env.get("POOLWATCH_CONFIG")
    if chosen is None and (base / "poolwatch.toml").is_file():
        chosen = base / "poolwatch.toml"
    if chosen is not None:
        file = Path(chosen)
        if not file.is_absolute():
            file = base / file
        if not file.is_file():
            raise ConfigError(
                f"config file {file} does not exist (from {path or '$POOLWATCH_CONFIG'})"
            )
        data = _load_toml(file)
        if file.name == "pyproject.toml":
            data = _tool_table(file, data)
        builder.merge_table(data, str(file))
        sources.append(str(file))
    builder.merge_env(env)
    if overrides:
        builder.merge_table(overrides, "start() arguments")
    return _build(builder, " + ".join(sources) or "defaults")


def config_from_mapping(mapping: Mapping[str, Any], *, source: str = "start() arguments") -> Config:
    """Validate a dict shaped like the TOML file (no files, no environment)."""
    builder = _Builder()
    builder.merge_table(mapping, source)
    return _build(builder, source)


def _build(builder: _Builder, source: str) -> Config:
    values = builder.parse()

    def section(name: str) -> dict[str, Any]:
        return {k: v for (s, k), v in values.items() if s == name}

    def make(cls: Any, name: str, **extra: Any) -> Any:
        try:
            return cls(**section(name), **extra)
        except TypeError as exc:
            required = [
                f.name
                for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            ]
            missing = [r for r in required if r not in section(name)]
            where = builder.source_of(name, next(iter(section(name)), ""))
            raise ConfigError(
                f"{where}: [{name}] is incomplete: missing {', '.join(missing)} "
                f"(required: {', '.join(required)})"
            ) from exc

    rules_kw = section("rules")
    try:
        rules = Rules(**rules_kw)
    except ValueError as exc:
        raise ConfigError(
            f"{builder.source_of('rules', next(iter(rules_kw), ''))}: {exc}"
        ) from None
    smtp = None
    if section("smtp"):
        smtp_kw = section("smtp")
        if "port" not in smtp_kw:
            smtp_kw["port"] = {"ssl": 465, "starttls": 587}.get(smtp_kw.get("security", ""), 25)
        if smtp_kw.get("password") is not None and not smtp_kw.get("username"):
            raise ConfigError(
                f"{builder.source_of('smtp', 'password')}: smtp.password is set but "
                "smtp.username is not: set both, or neither"
            )
        values.update({("smtp", k): v for k, v in smtp_kw.items()})
        smtp = make(SmtpConfig, "smtp")
    webhook = make(WebhookConfig, "webhook") if section("webhook") else None
    heartbeat = make(HeartbeatConfig, "heartbeat") if section("heartbeat") else None
    delivery = make(DeliveryConfig, "delivery")
    top = section("")
    config = Config(
        **top,
        rules=rules,
        smtp=smtp,
        webhook=webhook,
        heartbeat=heartbeat,
        delivery=delivery,
        source=source,
    )
    names = config.channel_names()
    for name in config.delivery.fallback or ():
        if name not in names:
            raise ConfigError(
                f"{builder.source_of('delivery', 'fallback')}: delivery.fallback names "
                f"{name!r}, which is not configured: expected some of {names}"
            )
    return config
