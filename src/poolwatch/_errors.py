"""poolwatch's exceptions and warnings: a flat tree."""

from __future__ import annotations

# Not ``typing.TYPE_CHECKING``: importing typing costs ~10 ms on the CLI's start-up path.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._models import Lease

__all__ = ["AdapterNotAvailable", "LeakError", "PoolwatchError", "PoolwatchWarning"]


class PoolwatchError(Exception):
    pass


class PoolwatchWarning(UserWarning):
    pass


class AdapterNotAvailable(PoolwatchError):
    pass


class LeakError(PoolwatchError, AssertionError):
    """Connections were left leased; ``leaks`` holds each one with its call site."""

    def __init__(self, message: str, leaks: list[Lease]) -> None:
        super().__init__(message)
        self.leaks = leaks
