"""``poolwatch.start()``: the watching runtime of one service, in one call.

It instruments the client libraries, starts the sampler, evaluates the alert rules on each
sample, delivers notifications through the configured channels (ledger, spool, retries,
escalation), pings the heartbeat, and optionally serves the admin app. ``Runtime.stop()``
undoes all of it; undelivered notifications stay in the spool for the next start.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import re
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from ._config import Config, ConfigError, config_from_mapping, load_config
from ._errors import PoolwatchError
from ._sampler import Sampler
from ._tracker import Tracker
from .alerts._delivery import Dispatcher
from .alerts._engine import Engine
from .alerts._heartbeat import Heartbeat
from .alerts._ledger import Ledger, Spool
from .alerts._notifiers import Channel, LogChannel, SmtpChannel, WebhookChannel

__all__ = ["Runtime", "build_channels", "default_spool_dir", "start"]

log = logging.getLogger("poolwatch")


def default_spool_dir() -> Path:
    """``$XDG_STATE_HOME/poolwatch/spool/<program>-<hash of cwd>`` (state: ``~/.local/state``).

    One directory per program and working directory, so that a restarted service sends its own
    undelivered alerts and never another service's through its channels.
    """
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", program)[:40] or "python"
    where = hashlib.sha256(os.getcwd().encode(errors="replace")).hexdigest()[:8]
    return Path(state) / "poolwatch" / "spool" / f"{slug}-{where}"


def build_channels(config: Config) -> list[Channel]:
    """The channels a configuration describes, in a fixed order: smtp, webhook, log."""
    channels: list[Channel] = []
    if config.smtp is not None:
        s = config.smtp
        channels.append(
            SmtpChannel(
                s.host,
                s.port,
                s.sender,
                s.to,
                security=s.security,
                username=s.username,
                password=s.password,
                timeout=s.timeout,
                cafile=s.cafile,
            )
        )
    if config.webhook is not None:
        w = config.webhook
        channels.append(
            WebhookChannel(
                w.url, format=w.format, secret=w.secret, timeout=w.timeout, cafile=w.cafile
            )
        )
    if config.log:
        channels.append(LogChannel())
    return channels


class Runtime:
    """The running parts: ``tracker``, ``sampler``, ``engine``, ``dispatcher``, ``ledger``,
    ``heartbeat`` and ``admin`` (None unless requested). Use ``stop()`` or a ``with`` block."""

    def __init__(
        self,
        config: Config,
        tracker: Tracker,
        sampler: Sampler,
        engine: Engine,
        dispatcher: Dispatcher,
        heartbeat: Heartbeat | None,
    ) -> None:
        self.config = config
        self.tracker = tracker
        self.sampler = sampler
        self.engine = engine
        self.dispatcher = dispatcher
        self.ledger: Ledger = dispatcher.ledger
        self.heartbeat = heartbeat
        self.admin: Any = None
        self._drill_stop = threading.Event()
        self._drill_thread: threading.Thread | None = None
        self._stopped = False

    def __repr__(self) -> str:
        ok, _ = self.ledger.healthy()
        state = "stopped" if self._stopped else ("alive" if self.sampler.alive else "NOT SAMPLING")
        return (
            f"<Runtime [{state} | every {self.sampler.interval:g} s | "
            f"channels {', '.join(self.dispatcher.workers) or 'none'} | "
            f"{'delivering' if ok else 'DELIVERY FAILING'} | firing {len(self.engine.firing())}]>"
        )

    def healthy(self) -> tuple[bool, str]:
        """Sampler ticking and every alert channel delivering (what the heartbeat reports)."""
        if not self.sampler.alive:
            return False, "the poolwatch sampler is not running (stopped or hung)"
        return self.ledger.healthy(exclude=("heartbeat",))

    def drill(self, *, timeout: float | None = None) -> list[Any]:
        """Send a marked test alert through every channel now; returns per-channel results."""
        from .alerts._drill import drill_channels

        return drill_channels(self.dispatcher, timeout=timeout)

    def _drill_loop(self, every: float) -> None:
        while not self._drill_stop.wait(every):
            try:
                self.drill()
            except Exception as exc:
                self.tracker.internal_error("alerts.drill", exc)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop everything started by ``start()``; spooled notifications stay for next time."""
        if self._stopped:
            return
        self._stopped = True
        self._drill_stop.set()
        if self.admin is not None:
            try:
                self.admin.stop()
            except Exception as exc:
                self.tracker.internal_error("admin.stop", exc)
        self.sampler.stop(timeout)
        if self.heartbeat is not None:
            self.heartbeat.stop(timeout)
        self.dispatcher.stop(timeout)

    def __enter__(self) -> Runtime:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _resolve_config(config: Config | Mapping[str, Any] | str | os.PathLike[str] | None) -> Config:
    if isinstance(config, Config):
        return config
    if config is None:
        return load_config()
    if isinstance(config, Mapping):
        return config_from_mapping(config)
    if isinstance(config, (str, os.PathLike)):
        return load_config(config)
    raise ConfigError(
        f"start(config={type(config).__name__}): expected a Config, a dict, a path to a TOML "
        "file, or None to read pyproject.toml / poolwatch.toml / the environment"
    )


def start(
    config: Config | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    *,
    admin: str | None = None,
    tracker: Tracker | None = None,
    instrument: bool | Sequence[str] = True,
    channels: Sequence[Channel] | None = None,
    spool: str | os.PathLike[str] | bool | None = None,
) -> Runtime:
    """Start watching this process's pools and alerting on them; returns the ``Runtime``.

    ``config``: a ``Config``, a dict shaped like the TOML file, a path, or None (read
    ``[tool.poolwatch]``, ``poolwatch.toml`` / ``$POOLWATCH_CONFIG`` and ``POOLWATCH_*``).
    ``admin="127.0.0.1:9091"`` also serves the admin app there. ``instrument``: True hooks
    every installed client library, a list names some, False none (you call ``instrument``).
    ``channels`` replaces the configured channels. ``spool``: a directory, False for memory
    only, None for ``delivery.spool`` or the default state directory.
    """
    from . import _api

    cfg = _resolve_config(config)
    if instrument:
        names = [] if instrument is True else list(instrument)
        _api.instrument(*names, tracker=tracker)
    tracker = tracker or _api.get_tracker()

    admin_spec = admin or cfg.admin
    engine = Engine(cfg.rules, pools=cfg.pools, admin_url=cfg.admin_url)
    ledger = Ledger()
    chosen = list(channels) if channels is not None else build_channels(cfg)
    spool_obj = None
    if spool is not False:
        where = spool if isinstance(spool, (str, os.PathLike)) else cfg.delivery.spool
        spool_obj = Spool(where if where is not None else default_spool_dir())
    d = cfg.delivery
    dispatcher = Dispatcher(
        chosen,
        ledger,
        spool=spool_obj,
        retry_base=d.retry_base,
        retry_max=d.retry_max,
        escalate_after=d.escalate_after,
        fallback=d.fallback,
        max_age=d.max_age,
        engine=engine,
    )
    engine.subscribe(dispatcher.submit)
    sampler = Sampler(
        tracker, interval=cfg.interval, capacity=cfg.history, census=None if cfg.census else False
    )
    sampler.subscribe(engine.evaluate)
    heartbeat = None
    runtime = Runtime(cfg, tracker, sampler, engine, dispatcher, None)
    if cfg.heartbeat is not None:
        heartbeat = Heartbeat(
            cfg.heartbeat.url,
            interval=cfg.heartbeat.interval,
            timeout=cfg.heartbeat.timeout,
            check=runtime.healthy,
            ledger=ledger,
        )
        runtime.heartbeat = heartbeat
    dispatcher.start()
    sampler.start()
    try:
        if admin_spec:
            runtime.admin = _serve_admin(runtime, admin_spec, cfg)
            if engine.admin_url is None:
                engine.admin_url = str(runtime.admin.url)
    except BaseException:
        runtime.stop()
        raise
    if heartbeat is not None:
        heartbeat.start()
    if cfg.drill_every:
        runtime._drill_thread = threading.Thread(
            target=runtime._drill_loop, args=(cfg.drill_every,), name="poolwatch-drill", daemon=True
        )
        runtime._drill_thread.start()
    return runtime


def _serve_admin(runtime: Runtime, spec: str, cfg: Config) -> Any:
    host, _, port = spec.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"admin = {spec!r} is not allowed: expected HOST:PORT such as 127.0.0.1:9091"
        )
    try:
        module: Any = importlib.import_module("poolwatch.admin")
        serve = module.serve
    except (ImportError, AttributeError) as exc:
        raise PoolwatchError(
            f"admin={spec!r} was asked for, but poolwatch.admin.serve is not available ({exc}); "
            "install 'poolwatch[admin]' or start without admin="
        ) from None
    token = cfg.admin_token.reveal() if cfg.admin_token is not None else None
    try:
        return serve(
            runtime=runtime,
            host=host.strip("[]"),
            port=int(port),
            token=token,
            allow_public=cfg.admin_public,
        )
    except module.AdminBindError as exc:
        if cfg.admin_public or "allow_public" not in str(exc):
            raise
        raise module.AdminBindError(
            f"{exc} From poolwatch.start() or a config file: set admin_public = true (and an "
            "admin_token) to serve beyond loopback."
        ) from None
