"""The `poolwatch` command: a thin click group over the library.

Subcommands are imported only when invoked (click's lazy-group pattern), so `poolwatch sockets`
from cron does not pay for the imports of `poolwatch hunt`.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

__all__ = ["COMMANDS", "main"]

#: command name -> "module:attribute" of a click command.
COMMANDS: dict[str, str] = {}


def _build() -> Any:
    try:
        import click
    except ImportError:
        sys.stderr.write(
            "poolwatch: the command line needs click and rich: pip install 'poolwatch[cli]'\n"
        )
        raise SystemExit(2) from None

    class LazyGroup(click.Group):
        def list_commands(self, ctx: click.Context) -> list[str]:
            return sorted(COMMANDS)

        def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
            target = COMMANDS.get(cmd_name)
            if target is None:
                return None
            module_name, _, attr = target.partition(":")
            command: click.Command = getattr(importlib.import_module(module_name), attr)
            return command

    @click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(package_name="poolwatch")
    def cli() -> None:
        """Find, prove and watch connection leaks in Python services."""

    return cli


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the `poolwatch` console script."""
    return _build()(args=argv, prog_name="poolwatch")
