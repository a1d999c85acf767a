"""TCP state names and numbers, and the parsing of user-given states.

Numbers are the kernel's ``TCP_*`` enum (include/net/tcp_states.h): the value of the ``st``
column of ``/proc/net/tcp`` and of ``idiag_state`` in a sock_diag message. Names are netstat's
(``CLOSE_WAIT``, ``FIN_WAIT1``); ss spells the same states ``close-wait``, ``fin-wait-1``,
``estab``, and both spellings are accepted wherever a user names a state.

This module imports nothing: it sits on the start-up path of ``poolwatch sockets``.
"""

from __future__ import annotations

__all__ = [
    "ALL_STATES_MASK",
    "STATE_NAMES",
    "TCP_STATES",
    "parse_states",
    "state_mask",
    "state_number",
]

#: index = kernel state number; "" for 0, which the kernel never uses.
STATE_NAMES: tuple[str, ...] = (
    "",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
)

#: Every state name, in kernel order.
TCP_STATES: tuple[str, ...] = STATE_NAMES[1:]

_NUMBERS = {name: number for number, name in enumerate(STATE_NAMES) if name}

# ss's spellings, and a few of its group names (see ss(8), "STATE-FILTER").
_ALIASES = {
    "ESTAB": ("ESTABLISHED",),
    "FIN_WAIT_1": ("FIN_WAIT1",),
    "FIN_WAIT_2": ("FIN_WAIT2",),
    "SYN_RECEIVED": ("SYN_RECV",),
    "UNCONN": ("CLOSE",),
    "CLOSED": ("CLOSE",),
    "LISTENING": ("LISTEN",),
    "CONNECTED": tuple(
        s for s in TCP_STATES if s not in ("LISTEN", "CLOSE", "TIME_WAIT", "SYN_RECV")
    ),
    "SYNCHRONIZED": tuple(
        s for s in TCP_STATES if s not in ("LISTEN", "CLOSE", "TIME_WAIT", "SYN_RECV", "SYN_SENT")
    ),
    "BUCKET": ("SYN_RECV", "TIME_WAIT"),
    "BIG": tuple(s for s in TCP_STATES if s not in ("SYN_RECV", "TIME_WAIT")),
    "ALL": TCP_STATES,
}

#: Bit ``1 << n`` for every state ``n``: the ``idiag_states`` filter that asks for all.
ALL_STATES_MASK = sum(1 << n for n in range(1, len(STATE_NAMES)))


def parse_states(states: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Canonical names of the states a user asked for: ``"close-wait,estab"`` -> both.

    Accepts netstat and ss spellings in any case, comma-separated or as a list, and ss's
    group names (``connected``, ``synchronized``, ``all``). ``None`` or empty means every
    state. An unknown name raises ``ValueError`` that lists the known ones.
    """
    if states is None:
        return TCP_STATES
    items = [states] if isinstance(states, str) else list(states)
    out: list[str] = []
    for item in items:
        for raw in str(item).split(","):
            word = raw.strip().upper().replace("-", "_")
            if not word:
                continue
            names = (word,) if word in _NUMBERS else _ALIASES.get(word)
            if names is None:
                known = ", ".join(s.lower().replace("_", "-") for s in TCP_STATES)
                raise ValueError(
                    f"unknown TCP state {raw.strip()!r}; use one of {known} "
                    f"(or connected, synchronized, all)"
                )
            out.extend(n for n in names if n not in out)
    return tuple(out) if out else TCP_STATES


def state_mask(states: tuple[str, ...]) -> int:
    """The kernel's ``idiag_states`` bit mask for canonical state names."""
    mask = 0
    for name in states:
        mask |= 1 << _NUMBERS[name]
    return mask


def state_number(name: str) -> int:
    """The kernel number of a canonical state name."""
    return _NUMBERS[name]
