"""Testing helpers: the pytest plugin, the downstream test server and the scenario hunt.

Importing this package imports nothing outside the standard library, and names load on first
use (PEP 562): the pytest plugin lives here, so every test session imports this package, and
it should not pay for asyncio and the hunt unless a test uses them.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._downstream import (
        BodyKind,
        ConnectionMode,
        Downstream,
        Encoding,
        Framing,
        RecordedRequest,
        Reply,
        error_page,
    )
    from ._hunt import (
        HuntReport,
        HuntTargetError,
        ScenarioResult,
        assert_no_leaking_scenarios,
        check_target,
        hunt,
        load_target,
        markdown_table,
        run_scenario,
    )
    from ._scenarios import Scenario, default_scenarios, matrix, select

__all__ = [
    "BodyKind",
    "ConnectionMode",
    "Downstream",
    "Encoding",
    "Framing",
    "HuntReport",
    "HuntTargetError",
    "RecordedRequest",
    "Reply",
    "Scenario",
    "ScenarioResult",
    "assert_no_leaking_scenarios",
    "check_target",
    "default_scenarios",
    "error_page",
    "hunt",
    "load_target",
    "markdown_table",
    "matrix",
    "run_scenario",
    "select",
]

_WHERE = {
    "_downstream": (
        "BodyKind",
        "ConnectionMode",
        "Downstream",
        "Encoding",
        "Framing",
        "RecordedRequest",
        "Reply",
        "error_page",
    ),
    "_hunt": (
        "HuntReport",
        "HuntTargetError",
        "ScenarioResult",
        "assert_no_leaking_scenarios",
        "check_target",
        "hunt",
        "load_target",
        "markdown_table",
        "run_scenario",
    ),
    "_scenarios": ("Scenario", "default_scenarios", "matrix", "select"),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}


def __getattr__(name: str) -> object:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'poolwatch.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
