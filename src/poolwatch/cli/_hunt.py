"""`poolwatch hunt module:function`: which downstream responses make this code leak."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from ..testing._hunt import DEFAULT_TIMEOUT, HuntTargetError, hunt, load_target
from ..testing._scenarios import BODIES, CONNECTIONS, ENCODINGS, STATUSES, matrix, select

__all__ = ["hunt_command"]


@click.command("hunt")
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--status",
    "statuses",
    type=click.IntRange(100, 599),
    multiple=True,
    help=f"Statuses to cross (repeatable; default {', '.join(map(str, STATUSES))}).",
)
@click.option(
    "--body",
    "bodies",
    type=click.Choice(BODIES),
    multiple=True,
    help="Body kinds to cross (repeatable; default all).",
)
@click.option(
    "--encoding",
    "encodings",
    type=click.Choice(ENCODINGS),
    multiple=True,
    help="Content encodings to cross (repeatable; default all).",
)
@click.option(
    "--connection",
    "connections",
    type=click.Choice(CONNECTIONS),
    multiple=True,
    help="Connection behaviours to cross (repeatable; default all).",
)
@click.option("--no-extras", is_flag=True, help="Leave out the one-off wire scenarios.")
@click.option(
    "-k",
    "--scenario",
    "patterns",
    multiple=True,
    help="Run only scenarios whose name matches this shell pattern, e.g. '403 *' (repeatable).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds a scenario may take before it is reported as hanging.",
)
@click.option("--all-rows", is_flag=True, help="List scenarios that did not leak too.")
@click.option("--list", "list_only", is_flag=True, help="List the scenarios and exit.")
def hunt_command(
    target: str,
    as_json: bool,
    statuses: tuple[int, ...],
    bodies: tuple[str, ...],
    encodings: tuple[str, ...],
    connections: tuple[str, ...],
    no_extras: bool,
    patterns: tuple[str, ...],
    timeout: float,
    all_rows: bool,
    list_only: bool,
) -> None:
    """Run TARGET (module:function taking a base URL, sync or async) against a matrix of
    downstream responses and report, per scenario, the connections it leaked, orphans,
    CLOSE_WAIT sockets, errors and the call sites.

    Exit status: 0 when no scenario leaks, 1 when any leaks or hangs, 2 on bad input.
    """
    try:
        scenarios = matrix(
            statuses or STATUSES,
            bodies or BODIES,
            encodings or ENCODINGS,
            connections or CONNECTIONS,
            extras=() if no_extras else None,
        )
        scenarios = select(scenarios, patterns)
    except ValueError as exc:
        _fail(str(exc))
    if list_only:
        for scenario in scenarios:
            click.echo(scenario.name)
        return
    try:
        func = load_target(target)
    except HuntTargetError as exc:
        _fail(str(exc))
    report = hunt(func, scenarios, timeout=timeout, name=target)
    if as_json:
        click.echo(report.to_json(indent=2))
    else:
        from rich.console import Console

        report.render(Console(), only_failing=not all_rows)
        leaking = report.leaking
        if not leaking:
            click.echo("No scenario leaks.")
    sys.exit(1 if report.failing else 0)


def _fail(message: str) -> NoReturn:
    click.echo(f"poolwatch hunt: {message}", err=True)
    sys.exit(2)
