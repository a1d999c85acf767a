"""A company-style HTTP helper: call sites should point past it once it is declared a library."""

from __future__ import annotations

import requests


def get_streamed(session: requests.Session, url: str) -> requests.Response:
    return session.get(url, stream=True)
