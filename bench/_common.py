"""Shared by every benchmark: alternate variants in one run, report medians and ratios."""

from __future__ import annotations

import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "AGAIN",
    "PROCESSES",
    "Timings",
    "alternate",
    "in_processes",
    "median_interval",
    "print_table",
    "paired_label",
    "print_wall_and_cpu",
    "time_calls",
]

#: How many fresh interpreters ``in_processes`` runs a loop in, one after another
#: (``POOLWATCH_BENCH_PROCESSES`` overrides it; 8 gives a quicker, looser look). Many
#: processes of few rounds each: see ``in_processes`` for why, and for why 24.
PROCESSES = int(os.environ.get("POOLWATCH_BENCH_PROCESSES", "24"))

#: The variant every loop with a target runs twice: the baseline again, under a second name.
#: Its ratio to the baseline is an A/A test, what the measurement itself reads for no
#: overhead at all, printed in the same table as the figures to read against it.
AGAIN = "again"


def time_calls(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """Seconds per call of ``fn`` over ``n`` calls: (wall time, this process's CPU time).

    A full collection runs first, outside the timing: which sample a collection of the whole
    benchmark heap (tens of milliseconds) fell into was the largest noise in paired CPU ratios.
    The collections the calls themselves cause are still timed.
    """
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


class Timings(dict[str, float]):
    """Median seconds per call of each variant, with the samples of every round kept.

    From ``alternate``, these are wall times, and ``cpu`` holds the process CPU times of the
    same calls.
    """

    def __init__(
        self, samples: dict[str, list[float]], cpu: dict[str, list[float]] | None = None
    ) -> None:
        super().__init__({name: statistics.median(values) for name, values in samples.items()})
        self.samples = samples
        self.cpu = Timings(cpu) if cpu is not None else None
        #: what each process measured, when these are ``in_processes``' merged rounds
        self.runs: list[Timings] = []

    @classmethod
    def merge(cls, runs: Sequence[Timings]) -> Timings:
        """The rounds of several runs as one: ``ratio`` then takes the median over all their
        blocks of two rounds, each block inside one run (every run has an even number)."""
        if not runs or any(len(v) % 2 for run in runs for v in run.samples.values()):
            raise ValueError("merge needs runs, each of an even number of rounds")

        def joined(parts: Sequence[dict[str, list[float]]]) -> dict[str, list[float]]:
            return {name: [x for part in parts for x in part[name]] for name in parts[0]}

        cpus = [run.cpu for run in runs if run.cpu is not None]
        merged = cls(
            joined([run.samples for run in runs]),
            joined([cpu.samples for cpu in cpus]) if len(cpus) == len(runs) else None,
        )
        merged.runs = list(runs)
        if merged.cpu is not None:
            merged.cpu.runs = cpus
        return merged

    def dumps(self) -> str:
        return json.dumps({"wall": self.samples, "cpu": self.cpu.samples if self.cpu else None})

    @classmethod
    def loads(cls, text: str) -> Timings:
        data = json.loads(text)
        return cls(data["wall"], data["cpu"])

    def ratio(self, name: str, baseline: str) -> float:
        """The median over blocks of two rounds of ``name`` / ``baseline`` in those rounds.

        Each round runs the variants back to back, so a slow spell of the machine (another
        process, a frequency change) that lasts a round weighs on both sides of its ratio,
        where the ratio of two medians would compare the variants across different spells.
        ``alternate`` reverses the order every other round, so in a block of two rounds each
        variant runs once early and once late: the block's ratio (the geometric mean of its
        rounds' ratios) is free of what a variant's place in the round does to it. (Rounds
        taken one by one fall into two groups, one per order, and their median into one of
        them: that moved the urllib3 loop's ratio by 2.5%.)
        """
        pairs = [
            value / base
            for value, base in zip(self.samples[name], self.samples[baseline], strict=True)
        ]
        if len(pairs) < 2:
            return statistics.median(pairs)
        blocks = [math.sqrt(pairs[i] * pairs[i + 1]) for i in range(0, len(pairs) - 1, 2)]
        return statistics.median(blocks)


def alternate(
    variants: Mapping[str, Callable[[], object]],
    *,
    calls: int,
    rounds: int = 7,
    setup: Mapping[str, Callable[[], object]] | None = None,
    teardown: Mapping[str, Callable[[], object]] | None = None,
) -> Timings:
    """Median seconds per call of each variant, run in turn ``rounds`` times (ABC CBA ...).

    Alternating in one process cancels most drift (CPU frequency, other load) that two
    separate runs would bake into the ratio; ``Timings.ratio`` pairs the rounds to cancel
    more, and reversing the order every other round cancels what a variant's place in the
    round does to it. ``setup``/``teardown`` run around each variant's turn (e.g.
    instrument / uninstrument), outside the timing. Wall and CPU time (``Timings.cpu``) are
    taken over the same calls.

    A whole round runs first and is not kept, as pyperf warms up each worker: the timed
    rounds then start past a fresh process's first turns. Without it, the baseline (which
    opens the first round) read slower than itself run again mid-round (the A/A row,
    ``AGAIN``) in 10 of the 14 HTTP tables of a whole run (0.960-0.994), which lowered every
    other ratio alike.
    """
    samples: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants.items())
    for turn in range(-1, rounds):  # -1: the warm-up round
        for name, fn in order if turn % 2 == 0 else order[::-1]:
            if setup and name in setup:
                setup[name]()
            fn()  # warm up this turn
            wall, used = time_calls(fn, calls)
            if turn >= 0:
                samples[name].append(wall)
                cpu[name].append(used)
            if teardown and name in teardown:
                teardown[name]()
    return Timings(samples, cpu)


def in_processes(target: str, *args: str, processes: int = PROCESSES) -> Timings:
    """``module:function(*args)`` (which runs ``alternate`` and returns its ``Timings``) in
    ``processes`` fresh interpreters, one after another, with their rounds merged.

    Rounds alternated in one process cancel drift, but not what the process itself does to
    every round of it: where its memory layout puts the objects and code of the loop (which
    attribute lookups share a slot of the interpreter's type cache, which share a cache line)
    moved a ratio here by 1-2% from one process to the next, and a loop run after the others
    in one long process read higher than alone. pyperf runs its workers in separate processes
    for the same reason. The child (bench/_child.py) prints the rounds as JSON.

    So the processes, not the rounds, are what to have many of. Six processes of the httpx
    sync loop on the socket, four blocks of two rounds each, put the CPU ratio's spread
    between processes at 1.1% (standard deviation, the blocks' own scatter taken out) and
    between the blocks of one process at 1.2%: the merged ratio of 3 processes x 4 blocks is
    then good to about 0.7%, and of 8 processes x 2 blocks (or 1 block, with half the
    rounds) to about 0.5%, in about the same time.

    That estimate was low: in whole runs of eight processes the A/A rows read 0.963-1.020, and
    a figure moved by up to 4% from one run to the next (wall time, SQLAlchemy sync: 1.006,
    then 1.045; requests: 1.033, then 1.012). At twenty-four processes, three whole runs (on
    ac3a3d8, 3f0538b and 2a3909b, about an hour each) put the A/A rows of the client loops at
    0.985-1.017: close enough to tell 1.02 from 1.04, not 1.025 from 1.035. The tables print
    the interval of each figure's median (``median_interval``) so that a reader sees which.
    """
    runs = []
    for _ in range(processes):
        done = subprocess.run(
            [sys.executable, "-m", "bench._child", target, *args],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
        runs.append(Timings.loads(done.stdout.splitlines()[-1]))
    return Timings.merge(runs)


def paired_label(result: Timings, rounds: int, samples: int | str) -> str:
    """What a ``print_wall_and_cpu`` figure of ``result`` is, for a table's title: `median of
    3 processes x 8 alternated rounds x 2000; ratio: median of the blocks of two rounds' own
    ratios` (``samples``: the calls timed per sample, with their unit if any)."""
    n = len(result.runs) or 1
    return (
        f"median of {n} process{'' if n == 1 else 'es'} x {rounds} alternated rounds x "
        f"{samples}; ratio: median of the blocks of two rounds' own ratios"
    )


def median_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """An interval that holds the median of what ``values`` sample with probability at least
    ``level``, from their order statistics alone (no assumption on their distribution: each
    value falls below the median with probability 1/2). None for too few values (under six,
    even the smallest and largest hold it less often than 95%).

    Given the processes' own ratios, it says how well a run pins a figure down: where the
    interval straddles a target, the run cannot tell which side of it the figure is on.
    """
    ordered = sorted(values)
    n = len(ordered)

    def coverage(k: int) -> float:  # of [k-th smallest, k-th largest], k counted from 1
        return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n

    if n == 0 or coverage(1) < level:
        return None
    k = 1
    while k < n // 2 and coverage(k + 1) >= level:
        k += 1
    return ordered[k - 1], ordered[n - k]


def print_table(
    title: str,
    rows: Sequence[tuple[str, float]],
    baseline: str,
    unit: str = "us",
    scale: float = 1e6,
    limit: float | None = None,
    ratios: dict[str, float] | None = None,
    spread: dict[str, list[float]] | None = None,
    controls: Sequence[str] = (),
    spread_label: str = "per process",
) -> None:
    """One table: each row's time and its ratio to ``baseline``; marks rows over ``limit``.

    ``ratios`` (by row name) replaces the ratio of the row's value to the baseline's, e.g.
    with ``Timings.ratio``'s paired rounds; ``spread`` (by row name) adds each process's own
    (or each part's, as ``spread_label`` says), and, for six or more, the 95% interval of
    their median (``median_interval``); ``controls`` are rows the limit does not apply to (an
    A/A row).
    """
    base = dict(rows)[baseline]
    print(f"\n{title}")
    print(f"  {'variant':<44} {unit:>10} {'ratio':>8}")
    for name, value in rows:
        ratio = value / base if base else float("nan")
        if ratios is not None and name in ratios:
            ratio = ratios[name]
        flag = ""
        if limit is not None and name != baseline and name not in controls:
            flag = "  ok" if ratio <= limit else f"  OVER {limit}"
        if spread and spread.get(name):
            interval = median_interval(spread[name])
            listed = " ".join(f"{r:.3f}" for r in spread[name])
            if interval is not None:
                low, high = interval
                listed = f"95% interval of the median {low:.3f}-{high:.3f}; each {listed}"
            flag += f"  ({spread_label}: {listed})"
        print(f"  {name:<44} {value * scale:>10.2f} {ratio:>8.3f}{flag}")


def print_wall_and_cpu(
    title: Callable[[str], str],
    rows: Mapping[str, str],
    result: Timings,
    per_call: int = 1,
    limit: float | None = 1.03,
) -> None:
    """Two tables from one ``alternate`` run: wall time, then the process's CPU time.

    ``rows`` maps each variant to its label, the baseline first; ``title(what)`` names a table;
    ``per_call`` divides the times (requests per call); ratios are ``Timings.ratio``'s. The
    ``AGAIN`` variant, where the loop ran it, is printed last as the A/A row, with no limit.
    """
    assert result.cpu is not None, "print_wall_and_cpu needs alternate()'s CPU times"
    if AGAIN in result:
        rows = {**rows, AGAIN: f"{rows[next(iter(rows))]} again (A/A)"}
    baseline, *others = rows
    for what, figures in (("wall time", result), ("client CPU time", result.cpu)):
        print_table(
            title(what),
            [(label, figures[name] / per_call) for name, label in rows.items()],
            baseline=rows[baseline],
            limit=limit,
            controls=[rows[AGAIN]] if AGAIN in rows else [],
            ratios={rows[name]: figures.ratio(name, baseline) for name in others},
            spread={
                rows[name]: [run.ratio(name, baseline) for run in figures.runs] for name in others
            },
        )
