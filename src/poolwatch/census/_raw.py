"""What the table readers share: address families and the raw row tuple.

Kept apart from ``_model`` (which needs ``dataclasses``) so that counting, the CLI's fast
path, imports nothing heavier than ``_socket`` and ``struct``.
"""

from __future__ import annotations

from _socket import AF_INET, AF_INET6

__all__ = ["AF_INET", "AF_INET6", "RawRow"]

#: (family, state number, src bytes, sport, dst bytes, dport, uid, inode); addresses packed
#: in network order, as ``inet_ntop`` takes them.
RawRow = tuple[int, int, bytes, int, bytes, int, int, int]
