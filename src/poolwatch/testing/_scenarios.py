"""The hunt's scenarios: one scripted downstream response each, and the default matrix.

A scenario is a name and a ``Reply`` (plus load-balancer mode). The default matrix crosses
status x body x encoding x connection behaviour, then adds the wire oddities that only make
sense once (204, a body delimited by close, a reset, HTTP/1.0, an idle close).
"""

from __future__ import annotations

import fnmatch
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ._downstream import Reply

__all__ = [
    "BODIES",
    "CONNECTIONS",
    "ENCODINGS",
    "EXTRAS",
    "STATUSES",
    "Scenario",
    "default_scenarios",
    "matrix",
    "select",
]

#: Seconds the slow bodies stall before their final chunk: long enough that a caller who does
#: not read the body returns before it is complete, short enough for a 30 s hunt.
SLOW = 0.3

STATUSES: tuple[int, ...] = (200, 403, 500)
#: body label -> Reply fields
_BODY_FIELDS: dict[str, dict[str, object]] = {
    "empty": {"body": "empty"},
    "html": {"body": "html"},
    "json": {"body": "json"},
    "chunked": {"body": "html", "framing": "chunked", "chunk_size": 64},
    "slow-chunked": {
        "body": "html",
        "framing": "chunked",
        "chunk_size": 64,
        "delay_final_chunk": SLOW,
    },
    "large": {"body": "large"},
}
BODIES: tuple[str, ...] = tuple(_BODY_FIELDS)
ENCODINGS: tuple[str, ...] = ("identity", "gzip")
CONNECTIONS: tuple[str, ...] = ("keep-alive", "close")


@dataclass(frozen=True)
class Scenario:
    """One downstream behaviour to run the user's code against."""

    name: str
    reply: Reply
    load_balancer: bool = False

    def __str__(self) -> str:
        return self.name


def _scenario(status: int, body: str, encoding: str, connection: str) -> Scenario:
    fields = dict(_BODY_FIELDS[body])
    reply = Reply(status=status, encoding=encoding, connection=connection, **fields)  # type: ignore[arg-type]
    return Scenario(f"{status} {body} {encoding} {connection}", reply)


#: Behaviours that only make sense once, not crossed with the whole matrix.
EXTRAS: tuple[Scenario, ...] = (
    Scenario("204 no-body identity keep-alive", Reply(status=204, body="none")),
    Scenario("200 until-close identity close", Reply(status=200, body="text", framing="close")),
    Scenario("200 none-until-close identity close", Reply(status=200, body="none")),
    Scenario(
        "200 reset-mid-body identity reset",
        Reply(body="large", size=256 * 1024, connection="reset"),
    ),
    Scenario("200 json identity http/1.0", Reply(body="json", http_version="1.0")),
    Scenario("403 html identity idle-close", Reply(status=403, body="html", close_idle_after=0.05)),
    Scenario(
        "403 empty identity load-balancer", Reply(status=403, body="empty"), load_balancer=True
    ),
    Scenario(
        "503 slow-headers identity keep-alive", Reply(status=503, body="html", delay_headers=0.1)
    ),
)


def matrix(
    statuses: Iterable[int] = STATUSES,
    bodies: Iterable[str] = BODIES,
    encodings: Iterable[str] = ENCODINGS,
    connections: Iterable[str] = CONNECTIONS,
    *,
    extras: Iterable[Scenario] | None = None,
) -> list[Scenario]:
    """status x body x encoding x connection, plus ``extras``; gzip of an empty body is skipped.

    Bodies: ``empty`` (Content-Length 0), ``html``, ``json``, ``chunked`` (chunked HTML),
    ``slow-chunked`` (the final chunk 0.3 s late), ``large`` (1 MiB). Connections:
    ``keep-alive``, ``close`` (Connection: close after the response).
    """
    statuses, bodies = list(statuses), list(bodies)
    encodings, connections = list(encodings), list(connections)
    for body in bodies:
        if body not in _BODY_FIELDS:
            raise ValueError(f"unknown body {body!r}; choose from {', '.join(BODIES)}")
    for encoding in encodings:
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; choose from {', '.join(ENCODINGS)}")
    for connection in connections:
        if connection not in CONNECTIONS:
            raise ValueError(
                f"unknown connection {connection!r}; choose from {', '.join(CONNECTIONS)}"
            )
    out = [
        _scenario(status, body, encoding, connection)
        for status, body, encoding, connection in itertools.product(
            statuses, bodies, encodings, connections
        )
        if not (body == "empty" and encoding == "gzip")
    ]
    out.extend(EXTRAS if extras is None else extras)
    return out


def default_scenarios() -> list[Scenario]:
    """The default matrix: 3 statuses x 6 bodies x 2 encodings x 2 connections, and extras."""
    return matrix()


def select(scenarios: Sequence[Scenario], patterns: Sequence[str]) -> list[Scenario]:
    """The scenarios whose name matches any shell pattern (``"403 *"``, ``"* gzip *"``)."""
    if not patterns:
        return list(scenarios)
    chosen = [s for s in scenarios if any(fnmatch.fnmatchcase(s.name, p) for p in patterns)]
    if not chosen:
        raise ValueError(
            f"no scenario matches {', '.join(map(repr, patterns))}; names look like "
            f"{scenarios[0].name!r}"
            if scenarios
            else "there are no scenarios to select from"
        )
    return chosen
