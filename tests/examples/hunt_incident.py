"""The incident's client code, its fix, and their aiohttp twins: what the README's hunt table runs.

``fetch_status`` is the incident: a streamed GET whose status is read and whose response is
never read, closed or released. ``fetch_status_fixed`` closes it with a ``with`` block.
"""

from __future__ import annotations

import aiohttp
import requests

# One session for the life of the process, as a service would have it.
_session = requests.Session()
_fixed_session = requests.Session()


def fetch_status(base_url: str) -> int:
    """The incident: read the status of a streamed response, never read or close it."""
    response = _session.get(base_url + "/resource", stream=True)
    return response.status_code


def fetch_status_fixed(base_url: str) -> int:
    """The fix: the `with` block closes the response, returning its connection."""
    with _fixed_session.get(base_url + "/resource", stream=True) as response:
        return response.status_code


async def aiohttp_fetch_status(base_url: str) -> int:
    """The aiohttp equivalent: read the status, never read or release the response."""
    async with aiohttp.ClientSession() as session:
        response = await session.get(base_url + "/resource")
        return response.status


async def aiohttp_fetch_status_fixed(base_url: str) -> int:
    """The aiohttp fix: `async with` on the response releases its connection."""
    async with aiohttp.ClientSession() as session, session.get(base_url + "/resource") as response:
        return response.status


# -- the README's table ------------------------------------------------------------------------

README = "README.md"
BEGIN = "<!-- poolwatch:hunt-table:begin (generated: python -m tests.examples.hunt_incident) -->"
END = "<!-- poolwatch:hunt-table:end -->"

#: The README's rows: the incident's two 403s (as the mock sent it, as the load balancer did)
#: and the responses that tell the libraries apart.
README_SCENARIOS = (
    "200 json identity keep-alive",
    "204 no-body identity keep-alive",
    "403 empty identity keep-alive",
    "403 empty identity load-balancer",
    "403 html identity keep-alive",
    "403 html gzip close",
    "403 chunked identity keep-alive",
    "403 slow-chunked identity keep-alive",
    "500 large identity keep-alive",
    "200 reset-mid-body identity reset",
)


def readme_table() -> str:
    """Hunt the four functions over README_SCENARIOS; the Markdown table for the README.

    The aiohttp columns appear once poolwatch has an aiohttp adapter to see its pool with.
    """
    import poolwatch
    from poolwatch.testing import default_scenarios, hunt, markdown_table

    poolwatch.instrument()
    by_name = {s.name: s for s in default_scenarios()}
    scenarios = [by_name[name] for name in README_SCENARIOS]
    columns = {
        "requests `stream=True`, status only": hunt(fetch_status, scenarios),
        "fixed: `with` the response": hunt(fetch_status_fixed, scenarios),
    }
    if "aiohttp" in poolwatch.instrumented():
        columns["aiohttp, status only"] = hunt(aiohttp_fetch_status, scenarios)
        columns["fixed: `async with` the response"] = hunt(aiohttp_fetch_status_fixed, scenarios)
    return markdown_table(columns)


def readme_section(text: str) -> str:
    """The generated part of the README text, between the markers."""
    start = text.index(BEGIN) + len(BEGIN)
    return text[start : text.index(END, start)].strip("\n")


def write_readme(path: str = README) -> None:
    """Regenerate the table in the README between the markers."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    start = text.index(BEGIN) + len(BEGIN)
    end = text.index(END, start)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text[:start] + "\n" + readme_table() + "\n" + text[end:])


if __name__ == "__main__":
    write_readme()
