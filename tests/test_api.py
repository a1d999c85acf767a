"""The public API: instrument() errors and warnings, no_leaks() in all its forms."""

from __future__ import annotations

import asyncio
import warnings
from typing import ClassVar

import pytest
import requests

import poolwatch
from poolwatch import adapters
from poolwatch.adapters._urllib3 import Urllib3Adapter

LEAK = pytest.mark.allow_leaks(reason="leaks on purpose to check no_leaks()")


def test_unknown_library_names_the_known_ones() -> None:
    """instrument('nope') says which adapters exist."""
    with pytest.raises(poolwatch.AdapterNotAvailable, match=r"no adapter for 'nope'; known: .*"):
        poolwatch.instrument("nope")


class _Missing(Urllib3Adapter):
    module = "poolwatch_no_such_module"


class _TooNew(Urllib3Adapter):
    tested: ClassVar[tuple[tuple[int, ...], tuple[int, ...]]] = ((0, 1), (0, 2))


def test_named_library_not_installed_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Asking by name for a library that is not installed says how to install it."""
    monkeypatch.setitem(adapters.ADAPTERS, "ghost", "tests.test_api:_Missing")
    with pytest.raises(poolwatch.AdapterNotAvailable, match=r"pip install 'poolwatch\[ghost\]'"):
        poolwatch.instrument("ghost")
    assert "ghost" not in poolwatch.instrumented()


def test_missing_library_is_skipped_quietly_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """instrument() with no names skips what is not installed."""
    monkeypatch.setitem(adapters.ADAPTERS, "ghost", "tests.test_api:_Missing")
    assert "ghost" not in poolwatch.instrument()


def test_untested_version_warns_and_still_instruments() -> None:
    """A library version outside the tested range gives a PoolwatchWarning, not a crash."""
    adapter = _TooNew()
    with pytest.warns(poolwatch.PoolwatchWarning, match=r"tested with urllib3 0\.1 to before 0\.2"):
        adapter.install(poolwatch.get_tracker())
    adapter.uninstall()


def test_instrument_twice_is_harmless() -> None:
    """A second instrument() call changes nothing."""
    first = poolwatch.instrument()
    hooked = requests.adapters.HTTPAdapter  # any attribute read: the classes stay as they are
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert poolwatch.instrument() == first
    assert hooked is requests.adapters.HTTPAdapter


def test_no_leaks_passes_clean_code(server: str) -> None:
    """Code that closes its responses passes no_leaks()."""
    with poolwatch.no_leaks(), requests.Session() as session:
        session.get(server + "/403").close()


@LEAK
def test_no_leaks_as_decorator_names_the_line(server: str) -> None:
    """As a decorator, no_leaks() raises LeakError listing the leaked call site."""
    session = requests.Session()

    @poolwatch.no_leaks()
    def handler() -> int:
        return session.get(server + "/403", stream=True).status_code

    with pytest.raises(poolwatch.LeakError) as info:
        handler()
    (leak,) = info.value.leaks
    assert leak.callsite.function.endswith("handler")
    assert "1 connection leaked inside no_leaks()" in str(info.value)
    assert "response 403 text/html" in str(info.value)
    session.close()


@LEAK
def test_no_leaks_on_async_function(server: str) -> None:
    """An async function decorated with no_leaks() is checked after it is awaited."""
    session = requests.Session()

    @poolwatch.no_leaks()
    async def handler() -> int:
        await asyncio.sleep(0)
        return session.get(server + "/403", stream=True).status_code

    with pytest.raises(poolwatch.LeakError):
        asyncio.run(handler())
    session.close()


@LEAK
def test_no_leaks_ignores_leases_taken_before_it(server: str) -> None:
    """A lease already out before entering is not the block's fault."""
    with requests.Session() as session:
        earlier = session.get(server + "/ok", stream=True)
        with poolwatch.no_leaks():
            session.get(server + "/ok").close()
        earlier.close()


def test_no_leaks_lets_the_body_exception_through(server: str) -> None:
    """An exception raised inside the block propagates unchanged."""
    with pytest.raises(KeyError), poolwatch.no_leaks():
        raise KeyError("from the body")
