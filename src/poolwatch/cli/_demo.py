"""`poolwatch demo`: replay the incident on 127.0.0.1."""

from __future__ import annotations

import click


@click.command()
def demo() -> None:
    """Replay the incident: a pool drained by unread 403 responses, diagnosed, then fixed."""
    from .._demo import run

    raise SystemExit(run())
