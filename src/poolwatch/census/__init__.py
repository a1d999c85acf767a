"""The socket census: TCP sockets by state, per process, per peer and host-wide.

Standard library only on Linux (netlink sock_diag, ``/proc``); psutil on other platforms.
Inside an instrumented process, ``join_leases()`` gives each live lease its socket's TCP state
and splits the process's CLOSE_WAIT sockets into leased (leaks), idle-pooled and unknown.

Names load on first use (PEP 562), so ``poolwatch sockets`` pays only for what it runs.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._census import (
        BACKENDS,
        Census,
        Endpoint,
        by_peer,
        by_state,
        census,
        count,
        host_counts,
        host_sockets,
        process_counts,
        process_sockets,
    )
    from ._errors import (
        CensusError,
        CensusNotSupported,
        CensusParseError,
        CensusPermissionError,
        ProcessNotFound,
    )
    from ._join import LeaseCensus, join_leases
    from ._model import TcpSocket
    from ._procfs import socket_owners
    from ._states import TCP_STATES, parse_states

__all__ = [
    "BACKENDS",
    "TCP_STATES",
    "Census",
    "CensusError",
    "CensusNotSupported",
    "CensusParseError",
    "CensusPermissionError",
    "Endpoint",
    "LeaseCensus",
    "ProcessNotFound",
    "TcpSocket",
    "by_peer",
    "by_state",
    "census",
    "count",
    "host_counts",
    "host_sockets",
    "join_leases",
    "parse_states",
    "process_counts",
    "process_sockets",
    "socket_owners",
]

_WHERE = {
    "_census": (
        "BACKENDS",
        "Census",
        "Endpoint",
        "by_peer",
        "by_state",
        "census",
        "count",
        "host_counts",
        "host_sockets",
        "process_counts",
        "process_sockets",
    ),
    "_errors": (
        "CensusError",
        "CensusNotSupported",
        "CensusParseError",
        "CensusPermissionError",
        "ProcessNotFound",
    ),
    "_join": ("LeaseCensus", "join_leases"),
    "_model": ("TcpSocket",),
    "_procfs": ("socket_owners",),
    "_states": ("TCP_STATES", "parse_states"),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}


def __getattr__(name: str) -> object:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'poolwatch.census' has no attribute {name!r}")
    qualified = f"{__name__}.{module}"
    __import__(qualified)  # not importlib: importing it (and warnings) costs start-up time
    value = getattr(sys.modules[qualified], name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
