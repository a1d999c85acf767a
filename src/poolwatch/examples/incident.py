"""The incident's client code, with requests, and its fix.

A service asks a downstream whether a user may do something and reads only the status code.
"""

from __future__ import annotations

from typing import Any


def check_permission(session: Any, url: str) -> bool:
    """The incident's code: read the status, never the body, never close the response."""
    response = session.get(url, stream=True)
    return bool(response.status_code == 200)


def check_permission_fixed(session: Any, url: str) -> bool:
    """The fix: the `with` block returns the connection whatever the status or body."""
    with session.get(url, stream=True) as response:
        return bool(response.status_code == 200)


def check_permission_urllib3(http: Any, url: str) -> bool:
    """The same mistake with urllib3 directly, this time with a pool timeout."""
    response = http.request("GET", url, preload_content=False, pool_timeout=0.2)
    return bool(response.status == 200)
