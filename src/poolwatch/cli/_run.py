"""``poolwatch run``: watch a Python program's pools without changing its code."""

from __future__ import annotations

import json
import os
import shutil
import sys

import click

from ._autorun import ENV, HERE, strip_path

__all__ = ["run"]


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option(
    "--admin",
    metavar="HOST:PORT",
    help="Serve the admin app and dashboard there (loopback only; port 0 picks a free one "
    "and the URL is printed). Token from $POOLWATCH_ADMIN_TOKEN.",
)
@click.option(
    "--config",
    "config",
    type=click.Path(exists=True, dir_okay=False),
    help="poolwatch TOML file (sampler, alert rules, channels).",
)
@click.option(
    "--library",
    "-l",
    "libraries",
    multiple=True,
    metavar="NAME",
    help="Instrument only this client library (repeatable; default: every installed one).",
)
@click.option(
    "--sigquit/--no-sigquit",
    default=False,
    help="On SIGQUIT (kill -3), print a thread dump to stderr instead of dying.",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(
    admin: str | None,
    config: str | None,
    libraries: tuple[str, ...],
    sigquit: bool,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND (a Python program) with poolwatch watching its connection pools.

    No code change: like opentelemetry-instrument, poolwatch puts a sitecustomize module first
    on PYTHONPATH, so the first Python process COMMAND starts instruments every installed
    client library at start-up (and runs poolwatch.start() with alerts when configured).

    \b
        poolwatch run --admin 127.0.0.1:9091 -- python app.py
        poolwatch run --sigquit -- flask --app app run
    """
    if admin:
        from ..admin import AdminBindError, check_bind, parse_address

        try:
            host, _port = parse_address(admin)
            check_bind(host, allow_public=False)
        except AdminBindError as exc:
            raise click.BadParameter(str(exc), param_hint="--admin") from None
    program = shutil.which(command[0])
    if program is None:
        click.echo(f"poolwatch run: command not found: {command[0]}", err=True)
        raise SystemExit(127)
    options = {
        "admin": admin,
        "config": os.path.abspath(config) if config else None,
        "libraries": list(libraries),
        "sigquit": sigquit,
    }
    env = dict(os.environ)
    env[ENV] = json.dumps(options)
    rest = strip_path(env.get("PYTHONPATH", ""))
    env["PYTHONPATH"] = HERE + (os.pathsep + rest if rest else "")
    sys.stdout.flush()
    sys.stderr.flush()
    # Replace this process, so signals (Ctrl-C, SIGTERM, kill -3) and the exit code are the
    # program's own.
    os.execve(program, list(command), env)
