"""Client functions for the hunt tests: user code, so outside the poolwatch package."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import aiohttp
import httpx
import requests

_session = requests.Session()
#: Responses kept referenced, as a service that stores them would; cleared by the tests.
kept: list[Any] = []


def fetch_and_keep(base_url: str) -> int:
    """Leaks and keeps the response: its socket is still open when the server closes."""
    response = _session.get(base_url + "/kept", stream=True)
    kept.append(response)
    return response.status_code


def read_body(base_url: str) -> int:
    """Reads the whole body: never leaks, but raises when the body is cut short."""
    with requests.Session() as session:
        return len(session.get(base_url + "/body").content)


def two_required(base_url: str, token: str) -> None:
    """Takes one argument too many for the hunt."""


async def sleeps_forever(base_url: str) -> None:
    """An async function that never finishes."""
    await asyncio.sleep(3600)


def blocks_on_slow_headers(base_url: str) -> int:
    """Blocks reading headers the downstream delays; freed when the downstream closes."""
    with requests.Session() as session:
        return session.get(base_url + "/slow").status_code


async def aiohttp_read(base_url: str) -> int:
    """aiohttp reading the whole body: never leaks."""
    async with aiohttp.ClientSession() as session, session.get(base_url + "/x") as response:
        await response.read()
        return response.status


_httpx_client = httpx.Client()


def httpx_fetch_status(base_url: str) -> int:
    """httpx: a streamed response whose status is read, never read or closed."""
    request = _httpx_client.build_request("GET", base_url + "/x")
    response = _httpx_client.send(request, stream=True)
    return response.status_code


def httpx_fetch_status_fixed(base_url: str) -> int:
    """httpx fixed: the stream context manager closes the response."""
    with _httpx_client.stream("GET", base_url + "/x") as response:
        return response.status_code


#: Set by the tests to let `waits_for_release` return.
release = threading.Event()


def waits_for_release(base_url: str) -> None:
    """A sync function stuck on something other than the downstream."""
    release.wait(30.0)


#: Called (when set) in the middle of `fixed_with_side_effect`, on the scenario's thread.
side_effect: list[Any] = []


def fixed_with_side_effect(base_url: str) -> int:
    """Closes its own response; runs the test's side effect while the scenario is live."""
    for effect in side_effect:
        effect()
    with requests.Session() as session, session.get(base_url + "/own", stream=True) as response:
        return response.status_code
