"""The census's exceptions: each message says what went wrong and what to do about it."""

from __future__ import annotations

from .._errors import PoolwatchError

__all__ = [
    "CensusError",
    "CensusNotSupported",
    "CensusParseError",
    "CensusPermissionError",
    "ProcessNotFound",
]


class CensusError(PoolwatchError):
    """The socket census could not be taken."""


class CensusPermissionError(CensusError):
    """The caller may not read what the census needs (another user's ``/proc/PID/fd``)."""


class ProcessNotFound(CensusError):
    """No process has the given pid (it may have exited)."""


class CensusNotSupported(CensusError):
    """No way to read the TCP table on this platform (not Linux and psutil not installed)."""


class CensusParseError(CensusError):
    """A netlink reply or a ``/proc`` table could not be parsed at all."""
