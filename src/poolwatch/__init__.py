"""poolwatch: find, prove and watch connection leaks in Python services."""

from __future__ import annotations

import sys

# Names load on first use (PEP 562): ``poolwatch sockets`` and other short-lived commands under
# this package must not pay ~50 ms for the tracker, adapters and importlib.metadata.
TYPE_CHECKING = False
if TYPE_CHECKING:
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
    from ._config import Config, ConfigError, load_config
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
    from ._runtime import Runtime, start
    from ._tracker import Tracker

_SOURCES = {
    "._api": (
        "get_tracker",
        "instrument",
        "instrumented",
        "leases",
        "no_leaks",
        "pools",
        "snapshot",
        "uninstrument",
    ),
    "._errors": ("AdapterNotAvailable", "LeakError", "PoolwatchError", "PoolwatchWarning"),
    "._models": (
        "CallSite",
        "Event",
        "Lease",
        "PoolSnapshot",
        "ResponseFacts",
        "Snapshot",
        "SocketInfo",
        "Waiter",
    ),
    "._tracker": ("Tracker",),
    "._runtime": ("Runtime", "start"),
    "._config": ("Config", "ConfigError", "load_config"),
}
_MODULE_OF = {name: module for module, names in _SOURCES.items() for name in names}

__version__ = "0.1.0.dev0"

__all__ = [
    "AdapterNotAvailable",
    "CallSite",
    "Config",
    "ConfigError",
    "Event",
    "LeakError",
    "Lease",
    "PoolSnapshot",
    "PoolwatchError",
    "PoolwatchWarning",
    "ResponseFacts",
    "Runtime",
    "Snapshot",
    "SocketInfo",
    "Tracker",
    "Waiter",
    "__version__",
    "get_tracker",
    "instrument",
    "instrumented",
    "leases",
    "load_config",
    "no_leaks",
    "pools",
    "snapshot",
    "start",
    "uninstrument",
]


def __getattr__(name: str) -> object:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'poolwatch' has no attribute {name!r}")
    qualified = __name__ + module
    __import__(qualified)  # not importlib: importing it (and warnings) costs start-up time
    value = getattr(sys.modules[qualified], name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
