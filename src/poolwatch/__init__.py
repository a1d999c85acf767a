"""poolwatch: find, prove and watch connection leaks in Python services."""

from __future__ import annotations

from ._api import (
    get_tracker,
    instrument,
    instrumented,
    leases,
    no_leaks,
    pools,
    snapshot,
    uninstrument,
)
from ._errors import AdapterNotAvailable, LeakError, PoolwatchError, PoolwatchWarning
from ._models import (
    CallSite,
    Event,
    Lease,
    PoolSnapshot,
    ResponseFacts,
    Snapshot,
    SocketInfo,
    Waiter,
)
from ._tracker import Tracker

__version__ = "0.1.0.dev0"

__all__ = [
    "AdapterNotAvailable",
    "CallSite",
    "Event",
    "Lease",
    "LeakError",
    "PoolSnapshot",
    "PoolwatchError",
    "PoolwatchWarning",
    "ResponseFacts",
    "Snapshot",
    "SocketInfo",
    "Tracker",
    "Waiter",
    "__version__",
    "get_tracker",
    "instrument",
    "instrumented",
    "leases",
    "no_leaks",
    "pools",
    "snapshot",
    "uninstrument",
]
