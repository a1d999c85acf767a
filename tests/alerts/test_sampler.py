"""The sampler: series from real instrumented pools, bounded rings, liveness, clean stop."""

from __future__ import annotations

import threading
import time

import urllib3

import poolwatch
from poolwatch._sampler import Sample, Sampler, series_name


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_series_follow_a_real_pool(downstream: tuple[str, int]) -> None:
    """Leasing 2 of 4 connections of a real urllib3 pool shows in the leased/utilisation series."""
    host, port = downstream
    label = f"urllib3 http://{host}:{port}"
    sampler = Sampler(poolwatch.get_tracker(), census=False)
    pool = urllib3.HTTPConnectionPool(host, port, maxsize=4, block=True)
    held = [pool.request("GET", "/", preload_content=False) for _ in range(2)]
    try:
        sample = sampler.sample_once()
        for response in held:
            response.drain_conn()
            response.release_conn()
        sampler.sample_once()
    finally:
        pool.close()
    assert isinstance(sample, Sample)
    assert [v for _, v in sampler.series(series_name("leased", label))] == [2.0, 0.0]
    assert [v for _, v in sampler.series(f"utilisation/{label}")] == [0.5, 0.0]
    assert [v for _, v in sampler.series(f"max/{label}")] == [4.0, 4.0]
    assert f"exhaustions/{label}" in sampler.names()
    assert sampler.series("no such series") == []


def test_ring_buffers_are_bounded() -> None:
    """A series keeps at most `capacity` points, the newest."""
    wall = iter(range(1000))
    sampler = Sampler(
        poolwatch.Tracker(),
        capacity=3,
        census=lambda: 1,
        census_every=0,
        wall_clock=lambda: float(next(wall)),
    )
    for _ in range(5):
        sampler.sample_once()
    assert sampler.series("tcp.close_wait") == [(2.0, 1.0), (3.0, 1.0), (4.0, 1.0)]


def test_census_runs_only_every_census_every_seconds() -> None:
    """The costly census is read on the first tick and then once per census_every."""
    clock = FakeClock()
    calls: list[float] = []

    def census() -> int:
        calls.append(clock.now)
        return len(calls)

    sampler = Sampler(poolwatch.Tracker(), census=census, census_every=10, clock=clock)
    seen = []
    for _ in range(25):
        sample = sampler.sample_once()
        assert sample is not None
        seen.append(sample.close_wait)
        clock.now += 1
    assert calls == [100.0, 110.0, 120.0]
    assert [v for v in seen if v is not None] == [1, 2, 3]


def test_thread_samples_and_stops_cleanly() -> None:
    """start() ticks in a daemon thread, subscribers get samples, stop() ends the thread."""
    got: list[Sample] = []
    sampler = Sampler(poolwatch.Tracker(), interval=0.01, census=False)
    sampler.subscribe(got.append)
    sampler.start()
    try:
        deadline = time.monotonic() + 10
        while len(got) < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert sampler.alive
        assert "alive" in repr(sampler)
    finally:
        sampler.stop()
    assert len(got) >= 3
    assert not sampler.alive
    assert not any(t.name == "poolwatch-sampler" and t.is_alive() for t in threading.enumerate())


def test_a_failing_subscriber_is_counted_not_raised() -> None:
    """A subscriber that raises is an internal error of the tracker; sampling goes on."""
    tracker = poolwatch.Tracker()
    sampler = Sampler(tracker, census=False)

    def broken(sample: Sample) -> None:
        raise RuntimeError("boom")

    sampler.subscribe(broken)
    assert sampler.sample_once() is not None
    assert sampler.sample_once() is not None
    assert tracker.internal_errors["sampler.subscriber"] == 2


def test_a_hung_sampler_is_not_alive() -> None:
    """A thread stuck in a tick (a subscriber that blocks) is reported not alive."""
    clock = FakeClock()
    release = threading.Event()
    entered = threading.Event()
    sampler = Sampler(poolwatch.Tracker(), interval=1.0, census=False, clock=clock)
    ticks = 0

    def stuck(sample: Sample) -> None:
        nonlocal ticks
        ticks += 1
        if ticks == 2:
            entered.set()
            release.wait(10)

    sampler.subscribe(stuck)
    sampler.sample_once()  # tick 1 in this thread, so the thread's tick is the stuck one
    sampler.start()
    try:
        assert entered.wait(10)
        assert sampler.alive
        clock.now += 60
        assert not sampler.alive
    finally:
        release.set()
        sampler.stop()
