"""pytest plugin: a test that leaves a connection leased fails, naming the line that took it.

On by default once poolwatch is installed (``pytest11`` entry point); ``--poolwatch=warn`` or
``off`` (ini: ``poolwatch = warn``) soften or disable it, ``-p no:poolwatch`` removes it.

Each test is checked after its whole teardown: every lease taken since its setup began that is
still out, or that ended as a leak (its owner collected while leased, its pool closed under it),
fails the test. Leases taken while a module/class/package/session-scoped fixture was being set
up belong to that fixture: they are checked when the fixture is finalized, in the teardown that
finalizes it, and never blamed on the test that happened to run first.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import pytest

from .._api import get_tracker, instrument, instrumented, uninstrument
from .._errors import PoolwatchWarning
from .._report import format_leaks
from .._tracker import Tracker
from ._fixtures import downstream  # pytest finds fixtures by module attribute

__all__ = ["PoolwatchLeakWarning", "downstream"]

MODES = ("fail", "warn", "off")
_HELP = (
    "What to do when a test leaves a connection leased: 'fail' (default), 'warn' or 'off' "
    "(off also leaves the client libraries uninstrumented)."
)


class PoolwatchLeakWarning(PoolwatchWarning):
    """A test left connections leased while poolwatch runs in ``warn`` mode."""


@dataclass
class _FixtureLeases:
    name: str
    scope: str
    seqs: list[int]


@dataclass
class _State:
    mode: str
    installed_here: list[str] = field(default_factory=list)
    #: Leases that broader-scoped fixtures took during their setup: never a test's leak.
    fixture_seqs: set[int] = field(default_factory=set)
    by_fixture: dict[int, _FixtureLeases] = field(default_factory=dict)
    finalized: list[_FixtureLeases] = field(default_factory=list)


_STATE = pytest.StashKey[_State]()
_MARK = pytest.StashKey[int]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("poolwatch", "connection leak detection (poolwatch)")
    group.addoption("--poolwatch", choices=MODES, default=None, dest="poolwatch", help=_HELP)
    parser.addini("poolwatch", _HELP, default="fail")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "allow_leaks(reason): this test may leave connections leased (say why). Leaks are "
        "still listed in the test's report sections.",
    )
    mode = config.getoption("poolwatch") or config.getini("poolwatch") or "fail"
    if mode not in MODES:
        raise pytest.UsageError(
            f"poolwatch = {mode!r} in the ini file is not a mode; use one of: {', '.join(MODES)}"
        )
    state = _State(mode)
    config.stash[_STATE] = state
    if mode != "off":
        before = set(instrumented())
        state.installed_here = sorted(set(instrument()) - before)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is not None and state.installed_here:
        # Only what this session installed: an inner pytester session must not strip the
        # outer session's hooks.
        uninstrument(*state.installed_here)


def pytest_report_header(config: pytest.Config) -> str:
    state = config.stash[_STATE]
    if state.mode == "off":
        return "poolwatch: off"
    libraries = ", ".join(instrumented()) or "no client library installed"
    return f"poolwatch: {state.mode} on leaked connections ({libraries})"


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, Any, Any]:
    state = request.config.stash[_STATE]
    if state.mode == "off" or fixturedef.scope == "function":
        return (yield)
    tracker = get_tracker()
    before = tracker.seq
    result = yield
    try:
        seqs = tracker.live_seqs(before, tracker.seq)
    except Exception as exc:  # a fault in poolwatch must not break the user's fixture
        tracker.internal_error("plugin.fixture_setup", exc)
        seqs = []
    if seqs:
        state.fixture_seqs.update(seqs)
        state.by_fixture[id(fixturedef)] = _FixtureLeases(
            fixturedef.argname, fixturedef.scope, seqs
        )
    return result


def pytest_fixture_post_finalizer(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> None:
    state = request.config.stash.get(_STATE, None)
    if state is not None:
        owned = state.by_fixture.pop(id(fixturedef), None)
        if owned is not None:
            state.finalized.append(owned)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    item.stash[_MARK] = get_tracker().seq
    return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, None, None]:
    result = yield
    state = item.config.stash[_STATE]
    if state.mode == "off" or _MARK not in item.stash:
        return result
    tracker = get_tracker()
    try:
        _check(item, state, tracker)
    except (pytest.fail.Exception, Warning):  # the verdict itself (warn mode may raise one)
        raise
    except Exception as exc:  # a fault in poolwatch is counted and shown, never the test's
        tracker.internal_error("plugin.teardown", exc)
        item.add_report_section(
            "teardown", "poolwatch", f"poolwatch could not check this test for leaks: {exc!r}"
        )
    return result


def _check(item: pytest.Item, state: _State, tracker: Tracker) -> None:
    leaks = tracker.leaks_since(item.stash[_MARK], exclude=state.fixture_seqs)
    fixture_reports = []
    for owned in state.finalized:
        seqs = set(owned.seqs)
        still = [lease for lease in tracker.leaks_since(min(seqs) - 1) if lease.seq in seqs]
        if still:
            fixture_reports.append(
                format_leaks(still, f"by fixture {owned.name!r} ({owned.scope} scope)")
            )
    state.finalized.clear()

    orphans = tracker.orphans_since(item.stash[_MARK], exclude=state.fixture_seqs)
    if orphans:
        # The library lost these itself (e.g. a cancelled request): shown, never the test's fault.
        item.add_report_section(
            "teardown", "poolwatch (orphaned by the library)", format_leaks(orphans)
        )

    sections = []
    marker = item.get_closest_marker("allow_leaks")
    if leaks:
        text = format_leaks(leaks, f"in {item.nodeid}")
        if marker is not None:
            reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else None)
            if not reason:
                pytest.fail(
                    f"{item.nodeid}: @pytest.mark.allow_leaks needs a reason, e.g. "
                    "@pytest.mark.allow_leaks(reason='leaks on purpose to test the report')",
                    pytrace=False,
                )
            item.add_report_section("teardown", "poolwatch (allowed)", f"{text}\nallowed: {reason}")
        else:
            sections.append(text)
    sections.extend(fixture_reports)
    if sections:
        _complain(item, state.mode, sections)


def _complain(item: pytest.Item, mode: str, sections: list[str]) -> None:
    message = "\n\n".join(sections)
    if mode == "fail":
        pytest.fail(
            "poolwatch: " + message + "\n\nClose or release each response (a `with` block, "
            "`response.close()`), or mark the test @pytest.mark.allow_leaks(reason=...).",
            pytrace=False,
        )
    item.warn(PoolwatchLeakWarning("poolwatch: " + message))
