"""httpx.AsyncClient against real local servers: leaks, pool timeouts, cancellation, orphans."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import httpx
import pytest

import poolwatch
from poolwatch import Tracker
from poolwatch.testing import Downstream, Reply

from .._helpers import pool_of

LEAK = pytest.mark.allow_leaks(reason="leaks on purpose to check what poolwatch reports")


@pytest.fixture
def scripted() -> Iterator[Downstream]:
    """A scripted real HTTP/1.1 server on 127.0.0.1 (slow headers, slow bodies)."""
    with Downstream() as downstream:
        yield downstream


async def fetch_status(client: httpx.AsyncClient, url: str) -> int:
    response = await client.send(client.build_request("GET", url), stream=True)  # never closed
    return response.status_code


async def hold(client: httpx.AsyncClient, url: str) -> httpx.Response:
    return await client.send(client.build_request("GET", url), stream=True)


async def until(predicate: object, *, turns: int = 200) -> None:
    """Let the loop run until ``predicate()`` holds (bounded: ``turns`` short sleeps)."""
    for _ in range(turns):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)


@pytest.mark.asyncio
@LEAK
async def test_kept_streamed_response_names_line_and_task(tracker: Tracker, server: str) -> None:
    """A kept, unread async response is a lease naming its line, its task and the response."""
    async with httpx.AsyncClient() as client:
        kept = await asyncio.create_task(hold(client, server + "/403"), name="fetcher-7")
        (lease,) = tracker.snapshot().leases
        assert lease.state == "leased"
        assert lease.callsite.function == "hold"
        assert lease.task_name == "fetcher-7"
        assert lease.where == "task fetcher-7 on thread MainThread"
        assert lease.response is not None
        assert (lease.response.status, lease.response.content_length) == (403, 86)
        await kept.aclose()
        assert tracker.snapshot().leases == ()


@pytest.mark.asyncio
@LEAK
async def test_dropped_response_is_lost_and_its_slot_with_it(tracker: Tracker, server: str) -> None:
    """An async response dropped unread is lost at its line; the pool times out on its slot."""
    limits = httpx.Limits(max_connections=1)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(5, pool=0.05)) as client:
        assert await fetch_status(client, server + "/403") == 403
        gc.collect()
        (lease,) = pool_of(tracker, "httpx").leases
        assert lease.state == "lost"
        assert lease.callsite.function == "fetch_status"
        with pytest.raises(httpx.PoolTimeout) as info:
            await client.get(server + "/ok")
        assert f"1 x {lease.callsite}" in str(info.value)
        assert "<AsyncConnectionPool [Requests: 1 active, 1 queued" in str(info.value)


@pytest.mark.asyncio
async def test_async_stream_context_manager_is_clean(tracker: Tracker, server: str) -> None:
    """`async with client.stream()` returns its connection though the body is never read."""
    async with (
        httpx.AsyncClient() as client,
        poolwatch.no_leaks(tracker=tracker),
        client.stream("GET", server + "/403") as response,
    ):
        assert response.status_code == 403
        assert len(tracker.snapshot().leases) == 1
    pool = pool_of(tracker, "httpx")
    assert (pool.leased, pool.checkouts, pool.checkins) == (0, 1, 1)


@pytest.mark.asyncio
async def test_dropped_async_stream_manager_closes_a_turn_later(
    tracker: Tracker, server: str
) -> None:
    """A dropped `client.stream()` manager closes its response from the loop: not a leak."""
    async with httpx.AsyncClient() as client:
        manager = client.stream("GET", server + "/403")
        assert (await manager.__aenter__()).status_code == 403
        del manager
        gc.collect()
        await until(lambda: pool_of(tracker, "httpx").leased == 0)
        pool = pool_of(tracker, "httpx")
        assert (pool.leased, pool.confirmed_leaks, pool.checkins) == (0, 0, 1)


@pytest.mark.asyncio
@LEAK
async def test_async_pool_timeout_message_says_everything(tracker: Tracker, server: str) -> None:
    """An async PoolTimeout's message names the pool state, the holding line and task."""
    limits = httpx.Limits(max_connections=2)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(5, pool=0.05)) as client:
        kept = [
            await asyncio.create_task(hold(client, server + "/403"), name=f"holder-{n}")
            for n in range(2)
        ]
        with pytest.raises(httpx.PoolTimeout) as info:
            await client.get(server + "/ok")
        message = str(info.value)
        assert f"<Pool httpx {server} [leased 2 | idle 0 | waiting 1 | max 2]>" in message
        site = tracker.snapshot().leases[0].callsite
        assert f"2 x {site}: response 403 text/html, 86-byte body" in message
        assert "task holder-0 on thread MainThread" in message
        assert pool_of(tracker, "httpx").exhaustions == 1
        for response in kept:
            await response.aclose()


@pytest.mark.asyncio
async def test_cancelled_while_awaiting_headers_is_clean(
    tracker: Tracker, scripted: Downstream
) -> None:
    """A request cancelled while awaiting its headers gives its connection back: no leak."""
    scripted.route("/slow", Reply(status=200, body="json", delay_headers=5))
    limits = httpx.Limits(max_connections=1)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(10, pool=2)) as client:
        task = asyncio.create_task(client.get(scripted.url_for("/slow")), name="slow")
        await until(
            lambda: pool_of(tracker, "httpx").leased == 1 if tracker.snapshot().pools else False
        )
        (lease,) = tracker.snapshot().leases
        assert lease.response is None  # in flight: a lease, no response yet
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        pool = pool_of(tracker, "httpx")
        assert (pool.leased, pool.orphans, pool.confirmed_leaks) == (0, 0, 0)
        assert tracker.leaks_since(0) == []
        # The pool really has its slot back.
        scripted.route("/slow", Reply(status=200, body="json"))
        assert (await client.get(scripted.url_for("/ok"))).status_code == 200


@pytest.mark.asyncio
async def test_read_timeout_is_clean(tracker: Tracker, scripted: Downstream) -> None:
    """httpx's own ReadTimeout mid-request returns the slot: not a leak, not an orphan."""
    scripted.route("/slow", Reply(status=200, body="json", delay_headers=5))
    limits = httpx.Limits(max_connections=1)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(5, read=0.05)) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(scripted.url_for("/slow"))
        pool = pool_of(tracker, "httpx")
        assert (pool.leased, pool.orphans, pool.confirmed_leaks) == (0, 0, 0)
        # Its own read timeout: a loaded machine may take more than 50 ms to answer.
        assert (await client.get(scripted.url_for("/ok"), timeout=5)).status_code == 200


@pytest.mark.asyncio
async def test_cancelled_mid_body_is_clean(tracker: Tracker, scripted: Downstream) -> None:
    """A task cancelled while reading a slow chunked body closes the response: no leak."""
    scripted.route("/drip", Reply(body="large", size=65536, framing="chunked", delay_mid_body=5))
    async with httpx.AsyncClient() as client:
        task = asyncio.create_task(client.get(scripted.url_for("/drip")))
        await until(lambda: any(lease.response for lease in tracker.snapshot().leases))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        pool = pool_of(tracker, "httpx")
        assert (pool.leased, pool.orphans, pool.confirmed_leaks) == (0, 0, 0)


@pytest.mark.asyncio
@LEAK
async def test_cancelled_while_queued_is_clean(tracker: Tracker, server: str) -> None:
    """A request cancelled while queued for a connection leaves no lease and no waiter."""
    limits = httpx.Limits(max_connections=1)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(5, pool=30)) as client:
        held = await hold(client, server + "/403")

        async def wait_in_line() -> httpx.Response:
            return await client.get(server + "/ok")

        queued = asyncio.create_task(wait_in_line(), name="queued")
        await until(lambda: pool_of(tracker, "httpx").waiting == 1)
        assert pool_of(tracker, "httpx").waiters[0].callsite.function.endswith("wait_in_line")
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        pool = pool_of(tracker, "httpx")
        assert (pool.leased, pool.waiting, pool.orphans, pool.checkouts) == (1, 0, 0, 1)
        await held.aclose()


@pytest.mark.asyncio
async def test_cancelled_after_assignment_is_an_orphan_not_a_user_leak(
    tracker: Tracker, server: str
) -> None:
    """httpcore keeps a CONNECTING connection a cancelled request left: an orphan, with proof."""
    limits = httpx.Limits(max_connections=1)
    other_origin = server.replace("127.0.0.1", "localhost")  # same server, another pool origin
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(5, pool=0.2)) as client:
        held = await hold(client, server + "/ok")
        victim = asyncio.create_task(client.get(other_origin + "/ok"), name="victim")
        await until(lambda: pool_of(tracker, "httpx").waiting == 1)
        # Closing the held response lets the pool close its idle connection and create a new one
        # for the queued victim; the victim is cancelled before it can run.
        await held.aclose()
        victim.cancel()
        with pytest.raises(asyncio.CancelledError):
            await victim
        pool = pool_of(tracker, "httpx")
        assert (pool.leased, pool.orphans, pool.confirmed_leaks) == (0, 1, 0)
        assert pool.leaks_by_callsite == ()
        assert tracker.leaks_since(0) == []  # not the user's leak: no_leaks() and the plugin pass
        (orphan,) = tracker.orphans_since(0)
        assert orphan.state == "orphaned"
        assert orphan.task_name == "victim"
        assert orphan.note is not None
        assert "CancelledError ended the request" in orphan.note
        assert "(CONNECTING)" in orphan.note
        assert "Connections: 1 active, 0 idle" in orphan.note
        assert [e.kind for e in tracker.snapshot().events] == ["orphaned"]
        # The slot really is gone, and the next PoolTimeout says where it went.
        with pytest.raises(httpx.PoolTimeout) as info:
            await client.get(server + "/ok")
        assert "No lease is held through poolwatch's hooks" in str(info.value)
        assert "1 connection in it serves no request (CONNECTING)" in str(info.value)


@pytest.mark.parametrize(("kept", "dropped"), [(0, 0), (37, 13)])
@pytest.mark.asyncio
@LEAK
async def test_200_concurrent_tasks_exact_counts(
    tracker: Tracker, server: str, kept: int, dropped: int
) -> None:
    """200 tasks x 3 requests through one AsyncClient: leased and lost equal the leaks made."""
    keep_at = set(range(0, 600, 16)[:kept])
    drop_at = set(range(7, 600, 46)[:dropped])
    assert (len(keep_at), len(drop_at), keep_at & drop_at) == (kept, dropped, set())
    held: list[httpx.Response] = []

    async def worker(client: httpx.AsyncClient, index: int) -> None:
        for i in range(3):
            n = index * 3 + i
            if n in keep_at:
                held.append(await hold(client, server + "/ok"))
            elif n in drop_at:
                await fetch_status(client, server + "/ok")
            else:
                assert (await client.get(server + "/ok")).status_code == 200

    async with httpx.AsyncClient(timeout=httpx.Timeout(30)) as client:
        async with poolwatch.no_leaks(tracker=tracker) if not (kept or dropped) else _nothing():
            # Bounded in time; wait_for rather than asyncio.timeout, which needs Python 3.11.
            await asyncio.wait_for(asyncio.gather(*(worker(client, t) for t in range(200))), 120)
        gc.collect()
        pool = pool_of(tracker, "httpx")
        states = [lease.state for lease in pool.leases]
        assert (states.count("leased"), states.count("lost")) == (kept, dropped)
        assert pool.leased == kept + dropped == len(held) + dropped
        assert pool.confirmed_leaks == dropped
        assert (pool.checkouts, pool.checkins) == (600, 600 - kept - dropped)
        for response in held:
            await response.aclose()
        assert pool_of(tracker, "httpx").leased == dropped


class _nothing:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


@LEAK
def test_leak_inside_asyncio_run_is_caught_by_no_leaks(tracker: Tracker, server: str) -> None:
    """no_leaks() around asyncio.run() in a plain test names the coroutine that leaked."""

    async def main() -> int:
        async with httpx.AsyncClient() as client:
            response = await asyncio.create_task(hold(client, server + "/403"), name="runner")
            status = response.status_code
            await client.aclose()  # closes the pool under the open response
            return status

    with pytest.raises(poolwatch.LeakError) as info, poolwatch.no_leaks(tracker=tracker):
        assert asyncio.run(main()) == 403
    assert "in hold" in str(info.value)
    assert "task runner on thread MainThread" in str(info.value)
    assert "pool closed while leased" in str(info.value)


def test_clean_asyncio_run_passes_no_leaks(tracker: Tracker, server: str) -> None:
    """Clean async code run with asyncio.run() inside a plain test passes no_leaks()."""

    async def main() -> int:
        async with (
            httpx.AsyncClient() as client,
            client.stream("GET", server + "/403") as response,
        ):
            return response.status_code

    with poolwatch.no_leaks(tracker=tracker):
        assert asyncio.run(main()) == 403
    assert pool_of(tracker, "httpx").checkouts == 1
