"""The hunt: run the user's client code against every scenario and say which ones leak.

Each scenario gets a fresh ``Downstream`` (its own port, so its pools, leases and sockets are
its own) and runs the user's callable ``func(base_url)`` (sync or async) on a worker thread with
a deadline: a scenario that does not finish in time is reported as hanging and abandoned, never
waited on. After the call the hunt reads, in this order: the leases taken during the call that
are still out or ended as leaks (``Tracker.leaks_since``), then it stops the downstream (every
connection closed with a FIN) and counts this process's sockets toward that port left in
CLOSE_WAIT. Finally it closes what the scenario leaked, so the next scenario starts clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import importlib.util
import inspect
import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import PoolwatchError
from .._models import Lease
from .._tracker import Tracker
from ._census import PeerSocket, shutdown_sockets_toward, sockets_toward
from ._downstream import Downstream
from ._scenarios import Scenario, default_scenarios

__all__ = [
    "HuntReport",
    "HuntTargetError",
    "ScenarioResult",
    "assert_no_leaking_scenarios",
    "check_target",
    "hunt",
    "load_target",
    "markdown_table",
    "run_scenario",
]

#: Seconds one scenario may take before it is reported as hanging.
DEFAULT_TIMEOUT = 5.0
#: Downstream ports this process's hunts have used. A scenario's pools are closed after it
#: (``_release``), and a client keeps them in its cache under host and port (urllib3's
#: PoolManager): a later downstream on a reused port number would be handed the closed pool.
_USED_PORTS: set[int] = set()
_PORT_ATTEMPTS = 50


class HuntTargetError(PoolwatchError, TypeError):
    """The hunt's target cannot be imported, is not callable, or takes the wrong arguments."""


@dataclass(frozen=True)
class ScenarioResult:
    """What one scenario did to the pools: leases left out, orphans, CLOSE_WAIT, errors.

    ``leaked``: leases taken during the call still out afterwards, or ended as leaks (their
    response collected while leased, their pool closed under them). ``orphans``: leases the
    library itself lost. ``close_wait``: this process's sockets toward the downstream in
    CLOSE_WAIT once the downstream had closed its side (``close_wait_idle`` of them are idle in
    a pool, which is harmless). ``error``: what the call raised, ``Type: message``.
    """

    scenario: str
    leaked: int
    orphans: int
    close_wait: int
    close_wait_idle: int
    error: str | None
    hung: bool
    seconds: float
    leases: tuple[Lease, ...] = field(default=(), repr=False, compare=False)

    @property
    def verdict(self) -> str:
        """``leak`` / ``orphan`` / ``hang`` / ``error`` / ``ok``, worst first."""
        if self.leaked:
            return "leak"
        if self.orphans:
            return "orphan"
        if self.hung:
            return "hang"
        if self.error:
            return "error"
        return "ok"

    @property
    def failed(self) -> bool:
        """True when the scenario leaked, orphaned a connection or hung."""
        return self.verdict in ("leak", "orphan", "hang")

    @property
    def callsites(self) -> list[tuple[str, int]]:
        """(call site, how many leases) of the leaked and orphaned leases, most first."""
        return Counter(str(lease.callsite) for lease in self.leases).most_common()

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "scenario": self.scenario,
            "verdict": self.verdict,
            "leaked": self.leaked,
            "orphans": self.orphans,
            "close_wait": self.close_wait,
            "close_wait_idle": self.close_wait_idle,
            "error": self.error,
            "hung": self.hung,
            "seconds": round(self.seconds, 3),
            "callsites": [{"site": site, "count": n} for site, n in self.callsites],
            "leases": [
                {
                    "pool": lease.pool,
                    "state": lease.state,
                    "callsite": str(lease.callsite),
                    "response": lease.response.describe() if lease.response else None,
                    "where": lease.where,
                }
                for lease in self.leases
            ],
        }


@dataclass(frozen=True)
class HuntReport:
    """Every scenario's result for one target."""

    target: str
    results: tuple[ScenarioResult, ...]
    seconds: float

    @property
    def failing(self) -> list[ScenarioResult]:
        """Scenarios that leaked, orphaned a connection or hung."""
        return [r for r in self.results if r.failed]

    @property
    def leaking(self) -> list[ScenarioResult]:
        """Scenarios that left a connection leased (or lost one)."""
        return [r for r in self.results if r.leaked or r.orphans]

    def result(self, scenario: str) -> ScenarioResult:
        """The result of the scenario with this name."""
        for r in self.results:
            if r.scenario == scenario:
                return r
        raise KeyError(scenario)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the target, each scenario, and a summary."""
        return {
            "target": self.target,
            "summary": {
                "scenarios": len(self.results),
                "leaking": len(self.leaking),
                "hung": sum(r.hung for r in self.results),
                "errors": sum(r.error is not None for r in self.results),
                "seconds": round(self.seconds, 3),
            },
            "scenarios": [r.as_dict() for r in self.results],
        }

    def to_json(self, **kwargs: Any) -> str:
        """The report as JSON text."""
        return json.dumps(self.as_dict(), **kwargs)

    def summary(self) -> str:
        """`3 of 74 scenarios leak (2 hang) in 4.1 s`."""
        leaking = len(self.leaking)
        hung = sum(r.hung for r in self.results)
        text = f"{leaking} of {len(self.results)} scenarios leak"
        if hung:
            text += f", {hung} hang"
        return f"{self.target}: {text} ({self.seconds:.1f} s)"

    def text(self, *, only_failing: bool = False) -> str:
        """A plain-text table, one line per scenario, then the call sites that leaked."""
        rows = [r for r in self.results if r.failed or not only_failing]
        width = max([len(r.scenario) for r in rows] + [8])
        lines = [self.summary()]
        lines.append(f"  {'scenario':<{width}}  verdict  leaked  orphans  close_wait  error")
        for r in rows:
            lines.append(
                f"  {r.scenario:<{width}}  {r.verdict:<7}  {r.leaked:>6}  {r.orphans:>7}  "
                f"{r.close_wait:>10}  {_short(r.error) or ''}"
            )
        sites: Counter[str] = Counter()
        for r in rows:
            for site, n in r.callsites:
                sites[site] += n
        if sites:
            lines.append("  leaked at:")
            lines.extend(f"    {n} x {site}" for site, n in sites.most_common())
        return "\n".join(lines)

    def render(self, console: Any = None, *, only_failing: bool = False) -> None:
        """Print the report as a rich table (needs ``rich``: ``pip install 'poolwatch[cli]'``).

        One row per scenario (only those that leaked, orphaned or hung with ``only_failing``),
        then the call sites that took the leaked connections.
        """
        from rich.console import Console
        from rich.table import Table

        console = console or Console()
        rows = [r for r in self.results if r.failed or not only_failing]
        console.print(self.summary(), markup=False)
        if rows:
            table = Table()
            table.add_column("scenario", no_wrap=True, min_width=max(len(r.scenario) for r in rows))
            for header in ("verdict", "leaked", "orphans", "CLOSE_WAIT"):
                table.add_column(
                    header,
                    justify="left" if header == "verdict" else "right",
                    no_wrap=True,
                    min_width=len(header),
                )
            errors = any(r.error for r in rows)
            if errors:
                table.add_column("error", overflow="ellipsis", no_wrap=True)
            styles = {"leak": "bold red", "orphan": "red", "hang": "yellow", "error": "cyan"}
            for r in rows:
                close_wait = str(r.close_wait)
                if r.close_wait_idle:
                    close_wait += f" ({r.close_wait_idle} idle)"
                cells = [r.scenario, r.verdict, str(r.leaked), str(r.orphans), close_wait]
                if errors:
                    cells.append(r.error or "")
                table.add_row(*cells, style=styles.get(r.verdict))
            console.print(table)
        sites: Counter[str] = Counter()
        for r in rows:
            for site, n in r.callsites:
                sites[site] += n
        if sites:
            console.print("leaked at:", markup=False)
            for site, n in sites.most_common():
                console.print(f"  {n} x {site}", markup=False, highlight=False)


def markdown_table(columns: dict[str, HuntReport]) -> str:
    """A Markdown table: one row per scenario, one column per report, then the call sites.

    Cells say ``**leaks** (n)``, ``orphans (n)``, ``hangs`` or ``ok``; timings and ports are
    left out so the table is the same on every run.
    """
    names: list[str] = []
    for report in columns.values():
        names.extend(r.scenario for r in report.results if r.scenario not in names)
    lines = [
        "| scenario | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name in names:
        cells = []
        for report in columns.values():
            try:
                r = report.result(name)
            except KeyError:
                cells.append("")
                continue
            cell = {
                "leak": f"**leaks** ({r.leaked})",
                "orphan": f"orphans ({r.orphans})",
                "hang": "hangs",
            }.get(r.verdict, "ok")
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    sites: Counter[str] = Counter()
    for report in columns.values():
        for r in report.results:
            for site, n in r.callsites:
                sites[site] += n
    if sites:
        lines.append("")
        lines.append(
            "Leaked connections were taken at: "
            + "; ".join(f"`{site}` ({n})" for site, n in sorted(sites.items()))
            + "."
        )
    return "\n".join(lines)


def _short(error: str | None, limit: int = 60) -> str | None:
    if error is None or len(error) <= limit:
        return error
    return error[: limit - 1] + "…"


# -- the target -------------------------------------------------------------------------------


def load_target(spec: str) -> Callable[[str], Any]:
    """The callable named by ``module:function`` (or ``path/to/file.py:function``).

    The current directory is importable, as with ``python -m``. Raises ``HuntTargetError``
    with one line naming what is wrong.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise HuntTargetError(f"{spec!r} is not module:function (e.g. myapp.client:fetch)")
    try:
        if module_name.endswith(".py") or os.sep in module_name:
            path = os.path.abspath(module_name)
            if not os.path.isfile(path):
                raise HuntTargetError(f"cannot import {module_name!r}: no such file")
            name = "_poolwatch_hunt_" + os.path.splitext(os.path.basename(path))[0]
            file_spec = importlib.util.spec_from_file_location(name, path)
            if file_spec is None or file_spec.loader is None:
                raise HuntTargetError(f"cannot import {module_name!r}: not a Python file")
            module = importlib.util.module_from_spec(file_spec)
            sys.modules[name] = module
            file_spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path and "" not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except HuntTargetError:
        raise
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise HuntTargetError(
            f"cannot import {module_name!r}: {type(exc).__name__}: {exc}".splitlines()[0]
        ) from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise HuntTargetError(f"module {module_name!r} has no attribute {attr!r}") from None
    check_target(target, spec)
    return target  # type: ignore[no-any-return]


def check_target(func: Any, name: str | None = None) -> None:
    """Raise ``HuntTargetError`` unless ``func`` is callable with one argument (a base URL)."""
    label: str = name or str(getattr(func, "__qualname__", None) or repr(func))
    if not callable(func):
        raise HuntTargetError(f"{label!r} is not callable (it is a {type(func).__name__})")
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return  # builtins and some C callables have no signature; let the call decide
    try:
        signature.bind("http://127.0.0.1:1")
    except TypeError as exc:
        raise HuntTargetError(
            f"{label!r} takes the wrong arguments: the hunt calls it with one base URL, "
            f"but its signature is {label.rpartition(':')[2]}{signature} ({exc})"
        ) from None


# -- running one scenario ---------------------------------------------------------------------


class _Hung(Exception):
    pass


async def _bounded(awaitable: Awaitable[Any], timeout: float) -> Any:
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
        raise _Hung
    return task.result()


class _Call:
    """The user's callable on a daemon thread; async results run in that thread's own loop."""

    def __init__(self, func: Callable[[str], Any], url: str, timeout: float, name: str) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.hung = False
        self._async = False
        self._func = func
        self._url = url
        self._timeout = timeout
        self.thread = threading.Thread(target=self._run, name=f"poolwatch-hunt {name}", daemon=True)

    def _run(self) -> None:
        try:
            value = self._func(self._url)
            if inspect.isawaitable(value):
                self._async = True
                value = asyncio.run(_bounded(value, self._timeout))
            self.value = value
        except _Hung:
            self.hung = True
        except BaseException as exc:
            self.error = exc

    def start(self) -> None:
        self.thread.start()

    def wait(self) -> bool:
        """Wait up to the deadline (plus a moment for an async cancel); False if still running."""
        self.thread.join(self._timeout)
        if self.thread.is_alive() and self._async:
            # The coroutine's own deadline cancels it; give the cancellation time to unwind.
            self.thread.join(1.5)
        return not self.thread.is_alive()


def _release(tracker: Tracker, seqs: set[int], port: int) -> None:
    """Close what the scenario leaked: the connections of leases ``seqs``, the port's pools.

    A response the user's code still holds can keep its socket open after its connection
    object is closed (http.client hands the socket to the response on ``Connection: close``),
    so the caller also shuts down every socket still open toward the dead port. A failure
    here is counted as an internal error and the hunt goes on.
    """
    suffix = f":{port}"
    try:
        for connection in tracker.connections_of(seqs):
            _close(connection)
        for _kind, name, pool in tracker.pool_objects():
            if name.endswith(suffix):
                _close(pool)
    except Exception as exc:
        tracker.internal_error("hunt.release", exc)


def _close(obj: Any) -> None:
    close = getattr(obj, "close", None)
    if close is None:
        return
    with contextlib.suppress(Exception):
        result = close()
        if inspect.iscoroutine(result):
            result.close()  # its loop is gone; never leave a coroutine unawaited


def _fresh_downstream(scenario: Scenario) -> Downstream:
    """A started downstream for ``scenario`` on a port no earlier scenario of this process had."""
    for _ in range(_PORT_ATTEMPTS):
        downstream = Downstream(default=scenario.reply, load_balancer=scenario.load_balancer)
        downstream.start()
        if downstream.port not in _USED_PORTS:
            _USED_PORTS.add(downstream.port)
            return downstream
        downstream.stop()
    raise PoolwatchError(
        f"poolwatch hunt: the system gave {_PORT_ATTEMPTS} ports in a row that earlier scenarios "
        "of this process had used; run the hunt in a fresh process"
    )


def _close_wait_after_stop(port: int, stale: set[int]) -> list[PeerSocket]:
    """This process's sockets toward the stopped downstream that are in CLOSE_WAIT.

    The downstream sent every connection its FIN as it stopped; a loaded machine may land some
    a moment later (a deferred softirq), so sockets still ESTABLISHED toward it are waited for,
    at most a second, before counting.
    """
    deadline = time.monotonic() + 1.0
    while True:
        sockets = [
            sock
            for sock in sockets_toward(port, states=("ESTABLISHED", "CLOSE_WAIT"))
            if sock.inode not in stale
        ]
        if time.monotonic() > deadline or all(s.state == "CLOSE_WAIT" for s in sockets):
            return [sock for sock in sockets if sock.state == "CLOSE_WAIT"]
        time.sleep(0.005)


def run_scenario(
    func: Callable[[str], Any],
    scenario: Scenario,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    tracker: Tracker | None = None,
) -> ScenarioResult:
    """Run ``func(base_url)`` against one scenario's downstream and measure what it left."""
    from .. import _api

    tracker = tracker or _api.get_tracker()
    started = time.monotonic()
    downstream = _fresh_downstream(scenario)
    mark = tracker.seq
    # Sockets already toward this port belong to someone else: the OS may hand a fresh
    # downstream a port number that an earlier, stopped server had, with stale sockets to it.
    stale = {sock.inode for sock in sockets_toward(downstream.port)}
    call = _Call(func, downstream.url, timeout, scenario.name)
    call.start()
    finished = call.wait()
    if not finished:
        # Closing the server's side often frees a client stuck reading; wait a moment more.
        downstream.stop()
        call.thread.join(0.5)
    # Responses the call dropped in a reference cycle are collected now, so a slot lost with
    # them shows as "lost". The young generations hold what the call created; a full
    # collection would cost tens of milliseconds per scenario in a large process.
    gc.collect(1)
    thread_id = call.thread.ident
    suffix = f":{downstream.port}"

    # The scenario's leases: taken on its thread (and its event loop), or from a pool for its
    # downstream's port on any thread; never another thread's work elsewhere in the process.
    def ours(lease: Lease) -> bool:
        return lease.thread_id == thread_id or lease.pool.endswith(suffix)

    leaked = [lease for lease in tracker.leaks_since(mark) if ours(lease)]
    orphans = [lease for lease in tracker.orphans_since(mark) if ours(lease)]
    leases = leaked + orphans
    downstream.stop()
    close_wait = _close_wait_after_stop(downstream.port, stale)
    idle = {info.inode for _, info in tracker.idle_sockets() if info.inode is not None}
    close_wait_idle = sum(1 for s in close_wait if s.inode in idle)
    error = call.error
    _release(tracker, {lease.seq for lease in leases}, downstream.port)
    shutdown_sockets_toward(downstream.port)
    call.value = None
    error_text = None
    if error is not None:
        error_text = f"{type(error).__name__}: {error}".splitlines()[0]
    return ScenarioResult(
        scenario=scenario.name,
        leaked=len(leaked),
        orphans=len(orphans),
        close_wait=len(close_wait),
        close_wait_idle=close_wait_idle,
        error=error_text,
        hung=call.hung or not finished,
        seconds=time.monotonic() - started,
        leases=tuple(leases),
    )


def hunt(
    func: Callable[[str], Any],
    scenarios: Sequence[Scenario] | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    tracker: Tracker | None = None,
    name: str | None = None,
) -> HuntReport:
    """Run ``func(base_url)`` against each scenario (the default matrix if None), in isolation.

    ``func`` may be sync or async. Client libraries are instrumented first (harmless when they
    already are). A scenario taking longer than ``timeout`` seconds is reported as hanging.
    """
    from .. import _api

    check_target(func, name)
    if tracker is None:
        _api.instrument()
    chosen = default_scenarios() if scenarios is None else list(scenarios)
    started = time.monotonic()
    results = tuple(run_scenario(func, s, timeout=timeout, tracker=tracker) for s in chosen)
    label = name or f"{getattr(func, '__module__', '?')}:{getattr(func, '__qualname__', func)}"
    return HuntReport(label, results, time.monotonic() - started)


def assert_no_leaking_scenarios(
    func: Callable[[str], Any],
    scenarios: Sequence[Scenario] | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> HuntReport:
    """Hunt ``func`` and fail (``AssertionError``) naming each scenario that leaks or hangs.

    In a test: ``assert_no_leaking_scenarios(my_client.fetch)``; or one scenario per test with
    ``@pytest.mark.parametrize("scenario", default_scenarios(), ids=str)`` and
    ``assert_no_leaking_scenarios(fetch, [scenario])``.
    """
    __tracebackhide__ = True
    report = hunt(func, scenarios, timeout=timeout)
    if report.failing:
        raise AssertionError(report.text(only_failing=True))
    return report
