"""`poolwatch drill`: prove that alerts reach people, channel by channel."""

from __future__ import annotations

import logging
import sys
import time

import click

from .._config import Config, ConfigError, load_config
from .._runtime import build_channels
from ..alerts._delivery import Dispatcher
from ..alerts._drill import DrillResult, InduceReport, drill_channels, induce
from ..alerts._ledger import Ledger
from ..alerts._notifiers import Channel

__all__ = ["drill"]


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    from .._config import _Bad, _positive_duration

    try:
        return _positive_duration(value)
    except _Bad as bad:
        raise click.BadParameter(f"{value!r}: expected {bad}") from None


def _print(results: list[DrillResult]) -> bool:
    for result in results:
        click.echo(result.describe())
        if result.describe_channel:
            click.echo(f"{'':<9} via {result.describe_channel}")
    return all(r.delivered for r in results)


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML file (default: poolwatch.toml, $POOLWATCH_CONFIG, [tool.poolwatch]).",
)
@click.option(
    "--channel",
    "channels",
    multiple=True,
    help="Drill only this channel (smtp, webhook, log); repeatable.",
)
@click.option(
    "--induce",
    "induce_",
    is_flag=True,
    help="Create real pool pressure on a scratch pool so the rule itself fires end to end.",
)
@click.option(
    "--every",
    callback=_duration,
    default=None,
    help='Repeat the drill at this interval ("24h", "30m"); with --count, a bounded schedule.',
)
@click.option(
    "--count", type=click.IntRange(min=1), default=None, help="Drills to run with --every."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds to wait for every channel's answer.",
)
def drill(
    config_path: str | None,
    channels: tuple[str, ...],
    induce_: bool,
    every: float | None,
    count: int | None,
    timeout: float,
) -> None:
    """Send a clearly marked test alert through every configured channel.

    Prints, per channel, delivered or FAILED with latency and the reason. Exits 1 if any
    channel failed, 2 if the configuration is wrong.
    """
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        click.echo(f"poolwatch drill: {exc}", err=True)
        raise SystemExit(2) from None
    all_channels = build_channels(config)
    known = [c.name for c in all_channels]
    unknown = [c for c in channels if c not in known]
    if unknown:
        raise click.BadParameter(
            f"{', '.join(unknown)} not configured; configured: {', '.join(known) or 'none'}",
            param_hint="--channel",
        )
    chosen = [c for c in all_channels if not channels or c.name in channels]
    click.echo(f"poolwatch drill: {config.describe()}")
    if known == ["log"]:
        click.echo(
            "note: only the log channel is configured; add [smtp] or [webhook] to reach people"
        )
    log = logging.getLogger("poolwatch.alerts")
    handler = None
    if not log.handlers:  # in a shell the log channel should land somewhere a person sees
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("log channel: %(message)s"))
        log.addHandler(handler)
    level = log.level
    log.setLevel(logging.INFO)
    try:
        ok = _run(config, chosen, induce_, every, count, timeout)
    finally:
        log.setLevel(level)
        if handler is not None:
            log.removeHandler(handler)
    if not ok:
        raise SystemExit(1)


def _run(
    config: Config,
    chosen: list[Channel],
    induce_: bool,
    every: float | None,
    count: int | None,
    timeout: float,
) -> bool:
    runs = 0
    all_ok = True  # a schedule fails if any of its drills failed
    while True:
        runs += 1
        if induce_:
            report = _induce(config, chosen, timeout)
            ok = _print(list(report.results)) and report.ok
        else:
            dispatcher = Dispatcher(chosen, Ledger())
            ok = _print(drill_channels(dispatcher, timeout=timeout))
        all_ok = all_ok and ok
        if every is None or (count is not None and runs >= count):
            return all_ok
        time.sleep(every)


def _induce(config: Config, chosen: list[Channel], timeout: float) -> InduceReport:
    report = induce(config, channels=chosen, timeout=timeout)
    if report.notification is None:
        click.echo(f"FAILED: no alert fired on the scratch pool {report.pool} within {timeout} s")
    else:
        click.echo(f"induced: {report.notification.subject}")
    return report
