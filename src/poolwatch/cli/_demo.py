"""`poolwatch demo`: replay the incident on 127.0.0.1."""

from __future__ import annotations

import click


@click.command()
@click.option("--serve", is_flag=True, help="Keep the dashboard up after the demo, until Ctrl-C.")
def demo(serve: bool) -> None:
    """Replay the incident: a pool drained by unread 403 responses, diagnosed, then fixed."""
    from .._demo import run

    raise SystemExit(run(serve=serve))
