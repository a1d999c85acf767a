"""The hunt: real clients against every scenario, what it reports, and the bad-input paths."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
import requests
from click.testing import CliRunner

import poolwatch
from poolwatch.cli import _build
from poolwatch.testing import (
    Downstream,
    HuntTargetError,
    Reply,
    Scenario,
    _hunt,
    assert_no_leaking_scenarios,
    default_scenarios,
    hunt,
    load_target,
    matrix,
    run_scenario,
    select,
)
from poolwatch.testing._census import sockets_toward
from poolwatch.testing._scenarios import BODIES, EXTRAS
from tests.examples import hunt_incident

from . import _targets

LEAK = pytest.mark.allow_leaks(reason="hunts a leaky function on purpose")
AIOHTTP = pytest.mark.skipif(
    "aiohttp" not in poolwatch.adapters.ADAPTERS,
    reason="waiting on the aiohttp adapter (src/poolwatch/adapters/_aiohttp.py)",
)
#: aiohttp warns "Unclosed connection" (ResourceWarning, from __del__) for each response the
#: leaky function abandoned: expected when hunting it on purpose.
IGNORE_UNCLOSED = pytest.mark.filterwarnings("ignore::ResourceWarning")
IGNORE_UNRAISABLE = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
LEAKY_LINE = "tests/examples/hunt_incident.py:19 in fetch_status"


@pytest.fixture(autouse=True)
def _drop_kept() -> Iterator[None]:
    yield
    for response in _targets.kept:
        response.close()
    _targets.kept.clear()


def _port(pool_label: str) -> int:
    return int(pool_label.rsplit(":", 1)[1])


# -- requests: the incident and its fix -------------------------------------------------------


@LEAK
def test_a_reused_port_never_hands_a_scenario_the_closed_pool_of_an_earlier_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The OS may give a downstream the port of the one before; the hunt then takes another.

    Each scenario's pools are closed after it, and requests keeps them under host and port: on
    the same port the second scenario was handed the closed pool ("Pool is closed").
    """
    probe = Downstream()
    probe.start()
    port = probe.port
    probe.stop()
    ports = iter([port, port])  # the first two downstreams get the same port number

    class SamePort(Downstream):
        def __init__(self, **kwargs: object) -> None:
            super().__init__(port=next(ports, 0), **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_hunt, "Downstream", SamePort)
    monkeypatch.setattr(_hunt, "_USED_PORTS", set())
    report = hunt(hunt_incident.fetch_status, default_scenarios()[:2])
    assert [(r.error, r.leaked) for r in report.results] == [(None, 1), (None, 1)]


@LEAK
def test_leaky_requests_function_leaks_in_every_scenario_at_its_line() -> None:
    """The incident's function leaks one connection in every default scenario, at its line."""
    report = hunt(hunt_incident.fetch_status)
    assert len(report.results) == len(default_scenarios())
    assert [r.scenario for r in report.leaking] == [s.name for s in default_scenarios()]
    for result in report.results:
        assert result.verdict == "leak", result.scenario
        assert result.leaked == 1
        assert result.callsites == [(LEAKY_LINE, 1)]
        assert result.error is None
        assert not result.hung
    lb = report.result("403 empty identity load-balancer").leases[0]
    assert lb.response is not None
    assert lb.response.status == 403
    assert lb.response.content_type == "text/html"  # the balancer's page, not the empty 403


def test_fixed_requests_function_leaks_in_no_scenario() -> None:
    """The fixed twin (`with` the response) leaks nowhere and leaves no CLOSE_WAIT."""
    report = hunt(hunt_incident.fetch_status_fixed)
    assert report.failing == []
    assert all(r.verdict == "ok" for r in report.results)
    assert all(r.close_wait == 0 for r in report.results)


@LEAK
def test_kept_leak_shows_close_wait_and_is_released_after_the_scenario() -> None:
    """A kept leaked response's socket is in CLOSE_WAIT once the downstream closes; the hunt
    closes it afterwards so no CLOSE_WAIT toward the scenario's port remains."""
    scenarios = select(default_scenarios(), ["403 html identity keep-alive", "200 json * close"])
    report = hunt(_targets.fetch_and_keep, scenarios)
    for result in report.results:
        assert result.leaked == 1
        assert result.close_wait == 1
        assert result.close_wait_idle == 0
        port = _port(result.leases[0].pool)
        assert [s for s in sockets_toward(port) if s.state == "CLOSE_WAIT"] == []


def test_error_raised_by_the_function_is_reported_without_failing() -> None:
    """An exception from the user's code is recorded as `Type: message`; it is not a leak."""
    result = run_scenario(_targets.read_body, select(EXTRAS, ["200 reset-mid-body*"])[0])
    assert result.verdict == "error"
    assert result.error is not None
    assert result.error.startswith("ChunkedEncodingError: ")
    assert not result.failed


def test_idle_pooled_close_wait_is_counted_as_idle() -> None:
    """A connection returned to the pool shows as CLOSE_WAIT once the server closes, marked
    idle (harmless), not as a leak."""
    result = run_scenario(
        hunt_incident.fetch_status_fixed, Scenario("kept-alive", Reply(status=200))
    )
    assert result.verdict == "ok"
    # requests' Response.close() closes the socket, so nothing is left idle in the pool.
    assert result.close_wait == result.close_wait_idle


def test_leak_by_another_thread_elsewhere_is_not_the_scenarios(downstream: Downstream) -> None:
    """A connection another thread leaks to another server during a scenario is not counted,
    nor closed by the hunt's clean-up."""
    held = []

    def leak_elsewhere() -> None:
        def work() -> None:
            held.append(session.get(downstream.url_for("/other"), stream=True))

        worker = threading.Thread(target=work)
        worker.start()
        worker.join()

    with requests.Session() as session:
        _targets.side_effect.append(leak_elsewhere)
        try:
            result = run_scenario(_targets.fixed_with_side_effect, Scenario("s", Reply()))
        finally:
            _targets.side_effect.clear()
        assert result.verdict == "ok"
        (other,) = held
        assert other.raw.read() == b'{"reason": "OK", "status": 200}'  # still open and readable
        other.close()


# -- deadlines --------------------------------------------------------------------------------


def test_async_function_that_never_finishes_is_reported_hanging() -> None:
    """An async scenario past its deadline is cancelled and reported as hanging."""
    report = hunt(_targets.sleeps_forever, [Scenario("any", Reply())], timeout=0.2)
    (result,) = report.results
    assert result.hung
    assert result.verdict == "hang"
    assert report.failing == [result]


def test_sync_function_blocked_past_its_deadline_is_reported_hanging() -> None:
    """A sync call stuck on a response slower than the deadline is reported as hanging."""
    scenario = Scenario("slow headers", Reply(delay_headers=3.0))
    result = run_scenario(_targets.blocks_on_slow_headers, scenario, timeout=0.2)
    assert result.hung
    assert result.verdict == "hang"


def test_stuck_sync_function_is_abandoned_and_the_hunt_goes_on() -> None:
    """A sync scenario stuck past its deadline is reported hanging and the next one still runs."""
    scenarios = [Scenario("first", Reply()), Scenario("second", Reply(status=403))]
    try:
        report = hunt(_targets.waits_for_release, scenarios, timeout=0.1)
    finally:
        _targets.release.set()
    assert [r.verdict for r in report.results] == ["hang", "hang"]
    assert len(report.failing) == 2


# -- the pytest helpers -----------------------------------------------------------------------


def test_assert_no_leaking_scenarios_passes_for_the_fix() -> None:
    """assert_no_leaking_scenarios returns the report when nothing leaks."""
    report = assert_no_leaking_scenarios(
        hunt_incident.fetch_status_fixed, select(default_scenarios(), ["403 *"])
    )
    assert report.failing == []


@LEAK
def test_assert_no_leaking_scenarios_names_each_leak() -> None:
    """assert_no_leaking_scenarios fails naming the leaking scenarios and the call site."""
    scenarios = select(
        default_scenarios(), ["403 html identity keep-alive", "403 html identity close"]
    )
    with pytest.raises(AssertionError) as info:
        assert_no_leaking_scenarios(hunt_incident.fetch_status, scenarios)
    text = str(info.value)
    assert "2 of 2 scenarios leak" in text
    assert "403 html identity keep-alive" in text
    assert "403 html identity close" in text
    assert f"2 x {LEAKY_LINE}" in text


@pytest.mark.parametrize(
    "scenario", select(default_scenarios(), ["* json identity *", "204 *"]), ids=str
)
def test_parametrised_per_scenario(scenario: Scenario) -> None:
    """One test per scenario: the fixed function leaks in none of them."""
    assert_no_leaking_scenarios(hunt_incident.fetch_status_fixed, [scenario])


# -- httpx: any unread stream leaks ------------------------------------------------------------

HTTPX = pytest.mark.skipif(
    "httpx" not in poolwatch.adapters.ADAPTERS,
    reason="waiting on the httpx adapter (src/poolwatch/adapters/_httpx.py)",
)


@HTTPX
@LEAK
def test_leaky_httpx_function_leaks_in_every_scenario() -> None:
    """An httpx stream opened and never closed leaks in every scenario, at its line."""
    scenarios = select(default_scenarios(), ["403 *", "200 json *"])
    report = hunt(_targets.httpx_fetch_status, scenarios)
    for result in report.results:
        assert result.verdict == "leak", result.scenario
        (site, _count), *_ = result.callsites
        assert site.startswith("tests/testing/_targets.py:")
        assert site.endswith(" in httpx_fetch_status")


@HTTPX
def test_fixed_httpx_function_leaks_in_no_scenario() -> None:
    """httpx's `with client.stream(...)` leaks in no default scenario."""
    assert hunt(_targets.httpx_fetch_status_fixed).failing == []


# -- aiohttp: only unbuffered bodies leak ------------------------------------------------------

UNBUFFERED = ("large", "slow-chunked")


@AIOHTTP
@LEAK
@IGNORE_UNCLOSED
@IGNORE_UNRAISABLE
def test_leaky_aiohttp_function_leaks_only_unbuffered_bodies() -> None:
    """aiohttp's unread response leaks only when its body was not buffered in full: large
    and slow chunked bodies leak, small ones release the connection by themselves."""
    scenarios = matrix(bodies=BODIES, extras=())
    report = hunt(hunt_incident.aiohttp_fetch_status, scenarios)
    for result in report.results:
        body = result.scenario.split()[1]
        assert (result.verdict == "leak") == (body in UNBUFFERED), result.scenario
        if result.leaked:
            assert result.callsites[0][0].startswith("tests/examples/hunt_incident.py:")
            assert result.callsites[0][0].endswith(" in aiohttp_fetch_status")


@AIOHTTP
def test_fixed_aiohttp_function_leaks_in_no_scenario() -> None:
    """`async with` on the aiohttp response leaks in no default scenario."""
    assert hunt(hunt_incident.aiohttp_fetch_status_fixed).failing == []


def test_async_function_runs_in_each_scenario() -> None:
    """An async target runs on its own loop per scenario and reports what it raised."""
    report = hunt(_targets.aiohttp_read, select(default_scenarios(), ["403 * identity close"]))
    assert report.failing == []
    assert all(r.error is None for r in report.results)


# -- the matrix -------------------------------------------------------------------------------


def test_default_matrix_names_are_unique_and_cover_each_dimension() -> None:
    """The default matrix crosses statuses, bodies, encodings and connections, plus extras."""
    names = [s.name for s in default_scenarios()]
    assert len(names) == len(set(names))
    for part in ("200 ", "403 ", "500 ", " gzip ", " close", " keep-alive", " chunked "):
        assert any(part in name for name in names), part
    assert "403 empty gzip keep-alive" not in names  # gzip of nothing is not a scenario


def test_matrix_narrows_and_rejects_unknown_values() -> None:
    """matrix() builds only what is asked, and names the accepted values for a bad one."""
    narrow = matrix([404], ["html"], ["identity"], ["close"], extras=())
    assert [s.name for s in narrow] == ["404 html identity close"]
    assert narrow[0].reply.status == 404
    with pytest.raises(ValueError, match="unknown body 'xml'; choose from empty, html"):
        matrix(bodies=["xml"])


def test_select_by_pattern_and_unmatched_pattern() -> None:
    """select() keeps the names matching a shell pattern and explains an empty match."""
    chosen = select(default_scenarios(), ["500 large *"])
    assert {s.name for s in chosen} == {
        "500 large identity keep-alive",
        "500 large identity close",
        "500 large gzip keep-alive",
        "500 large gzip close",
    }
    with pytest.raises(ValueError, match="no scenario matches '999 \\*'"):
        select(default_scenarios(), ["999 *"])


# -- the target -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xyz:f", "cannot import 'no_such_module_xyz': ModuleNotFoundError"),
        ("tests.examples.hunt_incident:nope", "has no attribute 'nope'"),
        ("tests.examples.hunt_incident:README", r"is not callable \(it is a str\)"),
        ("tests.testing._targets:two_required", "takes the wrong arguments"),
        ("tests.examples.hunt_incident", "is not module:function"),
        ("missing_file.py:f", "cannot import 'missing_file.py': no such file"),
    ],
)
def test_bad_targets_are_named(spec: str, message: str) -> None:
    """load_target raises HuntTargetError with one line naming what is wrong."""
    with pytest.raises(HuntTargetError, match=message) as info:
        load_target(spec)
    assert "\n" not in str(info.value)


def test_target_by_file_path() -> None:
    """path/to/file.py:function loads the function from that file."""
    func = load_target("tests/examples/hunt_incident.py:fetch_status_fixed")
    assert func.__name__ == "fetch_status_fixed"


# -- the command line -------------------------------------------------------------------------


def _run(*args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `poolwatch ARGS`, through the real command group."""
    result = CliRunner().invoke(_build(), list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_xyz:f", "cannot import 'no_such_module_xyz'"),
        ("tests.testing._targets:kept", "is not callable"),
        ("tests.testing._targets:two_required", "takes the wrong arguments"),
    ],
)
def test_cli_bad_target_exits_2_with_one_line(target: str, message: str) -> None:
    """`poolwatch hunt` on a bad target prints one error line naming it and exits 2."""
    code, out, err = _run("hunt", target)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("poolwatch hunt: ")
    assert message in err


@LEAK
def test_cli_json_on_leaky_function_exits_1() -> None:
    """--json prints every scenario with its call site; a leak makes the exit status 1."""
    code, out, _ = _run(
        "hunt", "tests.examples.hunt_incident:fetch_status", "--json", "-k", "403 html *"
    )
    assert code == 1
    data = json.loads(out)
    assert data["summary"]["leaking"] == data["summary"]["scenarios"] == 5
    for scenario in data["scenarios"]:
        assert scenario["verdict"] == "leak"
        assert scenario["callsites"] == [{"site": LEAKY_LINE, "count": 1}]


def test_cli_table_on_fixed_function_exits_0() -> None:
    """The table run on the fixed function says nothing leaks and exits 0."""
    code, out, _ = _run(
        "hunt",
        "tests.examples.hunt_incident:fetch_status_fixed",
        "--status",
        "403",
        "--body",
        "html",
        "--no-extras",
    )
    assert code == 0
    assert "0 of 4 scenarios leak" in out


@LEAK
def test_cli_table_lists_leaks_and_call_site() -> None:
    """The rich table names each leaking scenario and the line that leaked."""
    code, out, _ = _run(
        "hunt", "tests.examples.hunt_incident:fetch_status", "-k", "403 empty identity *"
    )
    assert code == 1
    assert "403 empty identity keep-alive" in out
    assert "403 empty identity load-balancer" in out
    assert f"3 x {LEAKY_LINE}" in out


def test_cli_list_prints_scenario_names() -> None:
    """--list prints the selected scenario names, one a line, and runs nothing."""
    code, out, _ = _run("hunt", "x:y", "--list", "--status", "500", "--body", "large")
    assert code == 0
    assert out.splitlines()[:4] == [
        "500 large identity keep-alive",
        "500 large identity close",
        "500 large gzip keep-alive",
        "500 large gzip close",
    ]


# -- the README table -------------------------------------------------------------------------


@LEAK
@IGNORE_UNCLOSED
@IGNORE_UNRAISABLE
def test_readme_table_is_what_the_hunt_reports() -> None:
    """The README's hunt table equals a fresh run (regenerate: python -m
    tests.examples.hunt_incident)."""
    with open(hunt_incident.README, encoding="utf-8") as handle:
        current = hunt_incident.readme_section(handle.read())
    assert current == hunt_incident.readme_table()


def test_readme_downstream_example_runs() -> None:
    """The README's Downstream example runs as written (its test function included)."""
    with open(hunt_incident.README, encoding="utf-8") as handle:
        text = handle.read()
    section = text[text.index("## Which responses make your code leak") :]
    code = section[section.index("```python\n") + len("```python\n") :]
    code = code[: code.index("```")]
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    with Downstream() as downstream:
        namespace["test_the_403_through_the_load_balancer"](downstream)  # type: ignore[operator]
        (request,) = downstream.requests
        assert request.path == "/resource"
