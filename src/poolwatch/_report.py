"""Text that diagnoses: the one place leak reports are worded."""

from __future__ import annotations

from collections.abc import Sequence

from ._models import Lease

__all__ = ["format_leaks"]


def format_leaks(leaks: Sequence[Lease], context: str = "") -> str:
    """`2 connections leaked in test_x:` then each lease's pool, call site, age and response."""
    noun = "connection" if len(leaks) == 1 else "connections"
    head = f"{len(leaks)} {noun} leaked" + (f" {context}" if context else "") + ":"
    return "\n".join([head, *("  " + lease.describe().replace("\n", "\n  ") for lease in leaks)])
