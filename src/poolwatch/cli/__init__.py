"""The `poolwatch` command: a thin click group over the library.

Subcommands are imported only when invoked (click's lazy-group pattern), so `poolwatch sockets`
from cron does not pay for the imports of `poolwatch hunt`.
"""

from __future__ import annotations

import sys

# Not ``typing``: ~10 ms of start-up that `poolwatch sockets` (timed against ss) cannot afford.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["COMMANDS", "main"]

#: command name -> "module:attribute" of a click command.
COMMANDS: dict[str, str] = {
    "demo": "poolwatch.cli._demo:demo",
    "run": "poolwatch.cli._run:run",
    "hunt": "poolwatch.cli._hunt:hunt_command",
    "sockets": "poolwatch.cli._sockets:sockets",
    "drill": "poolwatch.cli._drill:drill",
}


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
            import importlib

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
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["sockets"]:
        # cron and monitoring checks run this as a whole process, timed against ss: its plain
        # forms skip click (~30 ms to import); anything else falls through to click below.
        from ._sockets import fast_main

        code = fast_main(args[1:])
        if code is not None:
            raise SystemExit(code)
    return _build()(args=argv, prog_name="poolwatch")
