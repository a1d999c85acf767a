"""The ``downstream`` pytest fixture (the plugin module imports it from here).

``Downstream`` is imported when the fixture is first used, so a session that never asks for
it does not import asyncio through the plugin.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ._downstream import Downstream

__all__ = ["downstream"]


@pytest.fixture
def downstream() -> Iterator[Downstream]:
    """A started ``Downstream`` on a free 127.0.0.1 port, stopped after the test.

    Script it with ``downstream.route(path, status=..., body=...)``; its base URL is
    ``downstream.url``.
    """
    from ._downstream import Downstream

    with Downstream() as server:
        yield server
