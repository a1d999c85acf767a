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


_sessions: dict[str, Any] = {}


def _session(name: str) -> Any:
    import requests

    return _sessions.setdefault(name, requests.Session())


def permission_check(base_url: str) -> bool:
    """The incident as a hunt target: one long-lived session, as a service would have it."""
    return check_permission(_session("leaky"), base_url + "/permissions/alice")


def permission_check_fixed(base_url: str) -> bool:
    """The fixed code as a hunt target."""
    return check_permission_fixed(_session("fixed"), base_url + "/permissions/alice")
