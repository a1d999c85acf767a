"""`poolwatch sockets`: the TCP socket census from a shell, cron or a monitoring check.

Start-up is part of what the command costs (cron runs it as a whole process, and ``ss`` is the
yardstick), so the common forms skip click and rich entirely: ``fast_main`` parses the plain
options by hand and ``run`` prints plain text or JSON. Anything else (``--help``, ``--watch``,
an option it does not know) goes through the click command, which calls the same ``run``.

Exit codes follow the monitoring-plugin convention: 0 OK, 1 WARNING, 2 CRITICAL (only with
``--warn`` / ``--crit``), 3 UNKNOWN for any error, including a bad option.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import IO, Any

    from ..census import Census, TcpSocket

__all__ = ["Options", "fast_main", "run"]

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATUS = ("OK", "WARNING", "CRITICAL", "UNKNOWN")
GROUPS = ("state", "peer", "pid", "socket")

HELP = """TCP sockets by state, per process, per peer or host-wide (like ss, joined to nothing).

\b
Examples:
  poolwatch sockets --state close-wait                 host-wide CLOSE_WAIT count
  poolwatch sockets --pid 1234 --by peer               one process, per remote peer
  poolwatch sockets --name gunicorn --state close-wait --warn 100 --crit 500
  poolwatch sockets --state close-wait --watch 10 --count 30

Without --pid or --name the census is host-wide (this network namespace). States take
netstat or ss names (close-wait, CLOSE_WAIT, estab, time-wait) and ss's groups (connected,
all). Exit codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (errors, no permission, bad usage).
"""


class UsageError(Exception):
    """A bad option value: reported, exit code 3."""


class Options:
    """What the command was asked to do; both parsers fill one in."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self.name: str | None = None
        self.states: list[str] = []
        self.peer: str | None = None
        self.local: str | None = None
        self.port: int | None = None
        self.by = "state"
        self.json = False
        self.warn: int | None = None
        self.crit: int | None = None
        self.watch: float | None = None
        self.count: int | None = None
        self.proc = "/proc"
        self.backend = "auto"

    def check(self) -> None:
        """``UsageError`` for values no census can use."""
        if self.by not in GROUPS:
            raise UsageError(f"--by {self.by!r}: use one of {', '.join(GROUPS)}")
        for flag, value in (("--warn", self.warn), ("--crit", self.crit)):
            if value is not None and value < 0:
                raise UsageError(f"{flag} {value}: a threshold is a count of sockets, >= 0")
        if self.warn is not None and self.crit is not None and self.warn > self.crit:
            raise UsageError(f"--warn {self.warn} is above --crit {self.crit}")
        if self.port is not None and not 0 <= self.port <= 65535:
            raise UsageError(f"--port {self.port}: out of range 0-65535")
        if self.watch is not None and self.watch <= 0:
            raise UsageError(f"--watch {self.watch}: give a positive number of seconds")
        if self.count is not None and self.count < 1:
            raise UsageError(f"--count {self.count}: give at least 1")
        if self.pids and self.name:
            raise UsageError("give --pid or --name, not both")


# -- the census for a set of options -----------------------------------------------------------


class Result:
    """One census over the chosen scope, merged across processes."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.sockets: list[TcpSocket] = []
        self.pids: list[int] | None = None
        self.backend = ""
        self.skipped = 0
        self.owners: dict[int, list[int]] = {}
        self.denied = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _matching_pids(text: str, proc: str) -> list[int]:
    """Processes whose command line contains ``text`` (never this command itself)."""
    me = os.getpid()
    found = []
    needle = text.encode()
    for entry in os.listdir(proc):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"{proc}/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ")
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(entry))
    return sorted(found)


def take(opts: Options) -> Result:
    """Run the census the options ask for."""
    from ..census import census

    states = opts.states or None
    need_sockets = opts.by != "state"
    result = Result()
    if opts.name is not None:
        pids = _matching_pids(opts.name, opts.proc)
        if not pids:
            raise LookupError(f"no process has {opts.name!r} in its command line")
    else:
        pids = opts.pids
    scopes: list[int | None] = list(pids) if pids else [None]
    for pid in scopes:
        one: Census = census(
            states,
            pid=pid,
            host=pid is None,
            remote=opts.peer,
            local=opts.local,
            port=opts.port,
            sockets=need_sockets,
            proc=opts.proc,
            backend=opts.backend,
        )
        for state, n in one.counts.items():
            result.counts[state] = result.counts.get(state, 0) + n
        result.sockets.extend(one.sockets)
        result.backend = one.backend
        result.skipped += one.skipped
        if pid is not None:
            for sock in one.sockets:
                result.owners.setdefault(sock.inode, []).append(pid)
    result.pids = list(pids) if pids else None
    if opts.by == "pid" and not pids:
        from ..census import socket_owners

        result.owners, result.denied = socket_owners(opts.proc)
    return result


def status_of(total: int, opts: Options) -> int:
    if opts.crit is not None and total >= opts.crit:
        return CRITICAL
    if opts.warn is not None and total >= opts.warn:
        return WARNING
    return OK


# -- output --------------------------------------------------------------------------------------


def _shown_counts(result: Result, opts: Options) -> dict[str, int]:
    """Asked-for states with zeros; otherwise only states that have sockets, most first."""
    if opts.states:
        return dict(result.counts)
    nonzero = {s: n for s, n in result.counts.items() if n}
    return dict(sorted(nonzero.items(), key=lambda kv: (-kv[1], kv[0])))


def _command(pid: int, proc: str) -> str:
    try:
        with open(f"{proc}/{pid}/comm", encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return "?"


def _groups(result: Result, opts: Options) -> list[dict[str, Any]]:
    from ..census import by_state
    from ..census._model import format_endpoint

    if opts.by == "peer":
        peers: dict[tuple[str, int], list[TcpSocket]] = {}
        for sock in result.sockets:
            peers.setdefault(sock.remote, []).append(sock)
        rows: list[dict[str, Any]] = [
            {"peer": format_endpoint(peer), "total": len(socks), "counts": by_state(socks)}
            for peer, socks in peers.items()
        ]
        rows.sort(key=lambda row: (-row["total"], row["peer"]))
        return rows
    if opts.by == "pid":
        per: dict[int | None, list[TcpSocket]] = {}
        for sock in result.sockets:
            owners = result.owners.get(sock.inode) if sock.inode else None
            targets: list[int | None] = list(owners) if owners else [None]
            for pid in targets:
                per.setdefault(pid, []).append(sock)
        rows = [
            {
                "pid": pid,
                "command": _command(pid, opts.proc) if pid is not None else "(no process)",
                "total": len(socks),
                "counts": by_state(socks),
            }
            for pid, socks in per.items()
        ]
        rows.sort(key=lambda row: (-row["total"], row["pid"] or 0))
        return rows
    if opts.by == "socket":
        return [sock.as_dict() for sock in result.sockets]
    return []


def _scope(result: Result) -> str:
    if result.pids is None:
        return "host"
    return "pid " + ",".join(str(p) for p in result.pids)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [
            cell.rjust(width) if i and cell.isdigit() else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _text(result: Result, opts: Options) -> str:
    counts = _shown_counts(result, opts)
    if opts.by == "state":
        rows = [[state, str(n)] for state, n in counts.items()]
        rows.append(["total", str(result.total)])
        text = _table(["STATE", "COUNT"], rows)
    elif opts.by == "socket":
        from ..census._model import format_endpoint

        text = _table(
            ["STATE", "LOCAL", "REMOTE", "INODE"],
            [
                [s.state, format_endpoint(s.local), format_endpoint(s.remote), str(s.inode)]
                for s in result.sockets
            ],
        )
    else:
        groups = _groups(result, opts)
        states = list(counts) or ["total"]
        key = "peer" if opts.by == "peer" else "pid"
        header = (["PEER"] if key == "peer" else ["PID", "COMMAND"]) + ["TOTAL", *states]
        rows = []
        for group in groups:
            if key == "peer":
                first = [group["peer"]]
            else:
                first = [str(group["pid"] or "-"), group["command"]]
            rows.append(
                first + [str(group["total"])] + [str(group["counts"].get(s, 0)) for s in states]
            )
        text = _table(header, rows)
        if opts.by == "pid" and result.denied:
            text += f"\n({result.denied} processes not readable: run as root to see their owners)"
    if result.skipped:
        text += f"\n(warning: {result.skipped} unparsable table entries skipped)"
    return text


def _perfdata(result: Result, opts: Options) -> str:
    warn = "" if opts.warn is None else str(opts.warn)
    crit = "" if opts.crit is None else str(opts.crit)
    counts = _shown_counts(result, opts) or {"total": 0}
    parts = [f"{state.lower()}={n};{warn};{crit};0" for state, n in counts.items()]
    if len(counts) > 1:
        parts.append(f"total={result.total};{warn};{crit};0")
    return " ".join(parts)


def _status_line(result: Result, opts: Options, code: int) -> str:
    what = "+".join(opts.states) if opts.states else "TCP"
    return (
        f"SOCKETS {STATUS[code]} - {result.total} {what} sockets ({_scope(result)}; "
        f"warn {opts.warn if opts.warn is not None else '-'}, "
        f"crit {opts.crit if opts.crit is not None else '-'}) | {_perfdata(result, opts)}"
    )


def dumps(value: Any) -> str:
    """``json.dumps(value)`` for the documents this command prints, without importing json.

    ``json`` pulls in ``re`` (~5 ms of start-up); strings go through the same C escaper json
    uses, and anything unusual (floats, other types) through ``json.dumps`` itself.
    """
    from _json import encode_basestring_ascii as quote

    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int:
        return str(value)
    if type(value) is str:
        return str(quote(value))
    if type(value) is dict and all(type(key) is str for key in value):
        return "{" + ", ".join(f"{quote(k)}: {dumps(v)}" for k, v in value.items()) + "}"
    if type(value) in (list, tuple):
        return "[" + ", ".join(dumps(item) for item in value) + "]"
    import json

    return json.dumps(value)


def _json(result: Result, opts: Options, code: int | None, extra: dict[str, Any]) -> str:
    doc: dict[str, Any] = {
        "scope": "host" if result.pids is None else "process",
        "pids": result.pids,
        "backend": result.backend,
        "counts": _shown_counts(result, opts),
        "total": result.total,
        "skipped": result.skipped,
    }
    if opts.by != "state":
        doc["by"] = opts.by
        doc["groups"] = _groups(result, opts)
    if code is not None:
        doc["status"] = STATUS[code]
    doc.update(extra)
    return dumps(doc)


def _thresholds(opts: Options) -> bool:
    return opts.warn is not None or opts.crit is not None


def report(result: Result, opts: Options, out: IO[str], extra: dict[str, Any] | None = None) -> int:
    """Print one census; returns the exit code."""
    code = status_of(result.total, opts) if _thresholds(opts) else OK
    if opts.json:
        out.write(_json(result, opts, code if _thresholds(opts) else None, extra or {}) + "\n")
    elif _thresholds(opts):
        out.write(_status_line(result, opts, code) + "\n")
        if opts.by != "state":
            out.write(_text(result, opts) + "\n")
    else:
        out.write(_text(result, opts) + "\n")
    return code


def _error_message(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def run(opts: Options, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """Take the census (once, or every ``--watch`` seconds) and print it; the exit code."""
    from ..census import CensusError

    out = out or sys.stdout
    err = err or sys.stderr
    try:
        opts.check()
        if opts.watch is not None:
            return _watch(opts, out)
        return report(take(opts), opts, out)
    except (CensusError, UsageError, LookupError, ValueError, OSError) as exc:
        message = _error_message(exc)
    except Exception as exc:  # a bug must still exit UNKNOWN, never 1 (= WARNING) or 2
        message = f"internal error, please report it: {exc!r}"
    if _thresholds(opts) and not opts.json:
        out.write(f"SOCKETS UNKNOWN - {message}\n")
    err.write(f"poolwatch sockets: {message}\n")
    return UNKNOWN


# -- --watch -------------------------------------------------------------------------------------


def _watch(opts: Options, out: IO[str], sleep: Callable[[float], None] | None = None) -> int:
    """Sample every ``opts.watch`` seconds, ``opts.count`` times; show growth per minute."""
    import time

    sleep = sleep or time.sleep
    live = out.isatty() and not opts.json
    first: tuple[float, int] | None = None
    previous: tuple[float, int] | None = None
    history: list[tuple[str, Result, float | None]] = []
    code = OK
    n = 0
    renderer = _LiveTable(opts) if live else None
    try:
        while opts.count is None or n < opts.count:
            if n:
                sleep(opts.watch or 1.0)
            now = time.monotonic()
            result = take(opts)
            stamp = time.strftime("%H:%M:%S")
            if first is None:
                first = (now, result.total)
            rate = None
            if previous is not None and now > previous[0]:
                rate = (result.total - previous[1]) / (now - previous[0]) * 60.0
            since = None
            if now > first[0]:
                since = (result.total - first[1]) / (now - first[0]) * 60.0
            previous = (now, result.total)
            code = status_of(result.total, opts) if _thresholds(opts) else OK
            history.append((stamp, result, rate))
            if renderer is not None:
                renderer.update(history, since, code)
            elif opts.json:
                extra = {"time": stamp, "rate_per_minute": rate, "since_start_per_minute": since}
                report(result, opts, out, extra)
                out.flush()
            else:
                out.write(_watch_line(stamp, result, opts, rate, code) + "\n")
                out.flush()
            n += 1
    except KeyboardInterrupt:
        pass
    finally:
        if renderer is not None:
            renderer.stop()
    return code


def _rate_text(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:+.1f}/min"


def _watch_line(stamp: str, result: Result, opts: Options, rate: float | None, code: int) -> str:
    counts = " ".join(f"{s} {n}" for s, n in _shown_counts(result, opts).items())
    line = f"{stamp}  total {result.total}  {counts}  growth {_rate_text(rate)}".rstrip()
    if _thresholds(opts):
        line += f"  {STATUS[code]}"
    return line


class _LiveTable:
    """The ``--watch`` table on a terminal: rich's Live display, imported only here."""

    def __init__(self, opts: Options) -> None:
        from rich.console import Console
        from rich.live import Live

        self.opts = opts
        self.live = Live(console=Console(), auto_refresh=False)
        self.live.start()

    def update(
        self, history: list[tuple[str, Result, float | None]], since: float | None, code: int
    ) -> None:
        from rich.table import Table

        states: list[str] = []
        for _, result, _ in history:
            for state in _shown_counts(result, self.opts):
                if state not in states:
                    states.append(state)
        title = f"TCP sockets, {_scope(history[-1][1])}: growth since start {_rate_text(since)}"
        if _thresholds(self.opts):
            title += f" [{STATUS[code]}]"
        table = Table(title=title)
        for column in ["time", "total", *states, "growth"]:
            table.add_column(column, justify="left" if column == "time" else "right")
        for stamp, result, rate in history[-20:]:
            table.add_row(
                stamp,
                str(result.total),
                *(str(result.counts.get(s, 0)) for s in states),
                _rate_text(rate),
            )
        self.live.update(table, refresh=True)

    def stop(self) -> None:
        self.live.stop()


# -- parsing: by hand for the fast path, click for everything else -------------------------------

_VALUE_OPTIONS = {
    "--pid": "pids",
    "--name": "name",
    "--state": "states",
    "--peer": "peer",
    "--remote": "peer",
    "--local": "local",
    "--port": "port",
    "--by": "by",
    "--warn": "warn",
    "--crit": "crit",
    "--proc": "proc",
    "--backend": "backend",
}
_INT_OPTIONS = {"pids", "port", "warn", "crit"}


def fast_main(argv: list[str]) -> int | None:
    """Run the command without click when ``argv`` uses only the plain options, else None.

    Returns the exit code, or None when the arguments need click (``--help``, ``--watch``,
    anything unusual); click then parses them again from scratch.
    """
    opts = Options()
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--json":
            opts.json = True
            i += 1
            continue
        name, eq, value = arg.partition("=")
        attr = _VALUE_OPTIONS.get(name)
        if attr is None:
            return None
        if not eq:
            if i + 1 >= len(args):
                return None
            value = args[i + 1]
            i += 1
        i += 1
        if attr in _INT_OPTIONS:
            try:
                number = int(value)
            except ValueError:
                return None  # let click word the error
            if attr == "pids":
                opts.pids.append(number)
            else:
                setattr(opts, attr, number)
        elif attr == "states":
            opts.states.append(value)
        else:
            setattr(opts, attr, value)
    return _run_parsed(opts)


def _run_parsed(opts: Options) -> int:
    from ..census import parse_states

    try:
        opts.states = list(parse_states(opts.states)) if opts.states else []
    except ValueError as exc:
        sys.stderr.write(f"poolwatch sockets: {exc}\n")
        return UNKNOWN
    return run(opts)


def _click_command() -> Any:
    import click

    class _Command(click.Command):
        """Usage errors exit 3 (UNKNOWN), as a monitoring check must, not click's 2."""

        def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
            try:
                return super().parse_args(ctx, args)
            except click.UsageError as exc:
                exc.show()
                ctx.exit(UNKNOWN)

    @click.command("sockets", cls=_Command, help=HELP)
    @click.option("--pid", "pids", type=int, multiple=True, help="A process (repeatable).")
    @click.option("--name", help="Processes whose command line contains this text.")
    @click.option(
        "--state",
        "states",
        multiple=True,
        help="TCP state(s), comma-separated or repeated: close-wait, established, time-wait...",
    )
    @click.option("--peer", "--remote", "peer", help="Remote address: IP, IP:PORT, [IPv6]:PORT.")
    @click.option("--local", help="Local address: IP, IP:PORT, [IPv6]:PORT or :PORT.")
    @click.option("--port", type=int, help="A port at either end.")
    @click.option(
        "--by",
        type=click.Choice(GROUPS),
        default="state",
        show_default=True,
        help="Group by state, remote peer, owning process, or list every socket.",
    )
    @click.option("--json", "as_json", is_flag=True, help="One JSON object (per sample).")
    @click.option(
        "--watch",
        type=float,
        metavar="SECONDS",
        help="Sample every SECONDS: a live table with growth per minute.",
    )
    @click.option("--count", type=int, help="With --watch: stop after this many samples.")
    @click.option("--warn", type=int, help="WARNING (exit 1) at this many matching sockets.")
    @click.option("--crit", type=int, help="CRITICAL (exit 2) at this many matching sockets.")
    @click.option("--proc", default="/proc", show_default=True, help="procfs root.")
    @click.option(
        "--backend",
        type=click.Choice(["auto", "netlink", "procfs", "psutil"]),
        default="auto",
        show_default=True,
        help="How to read the TCP table.",
    )
    def sockets(
        pids: tuple[int, ...],
        name: str | None,
        states: tuple[str, ...],
        peer: str | None,
        local: str | None,
        port: int | None,
        by: str,
        as_json: bool,
        watch: float | None,
        count: int | None,
        warn: int | None,
        crit: int | None,
        proc: str,
        backend: str,
    ) -> None:
        opts = Options()
        opts.pids = list(pids)
        opts.name = name
        opts.states = list(states)
        opts.peer = peer
        opts.local = local
        opts.port = port
        opts.by = by
        opts.json = as_json
        opts.watch = watch
        opts.count = count
        opts.warn = warn
        opts.crit = crit
        opts.proc = proc
        opts.backend = backend
        sys.exit(_run_parsed(opts))

    return sockets


def __getattr__(name: str) -> Any:
    # The click command is built on first access, so importing this module for ``fast_main``
    # does not import click.
    if name == "sockets":
        command = _click_command()
        globals()["sockets"] = command
        return command
    raise AttributeError(name)
