"""The netlink and /proc parsers, fuzzed: corrupt input is skipped and counted or refused
with a clear error, never a crash and never a wrong total."""

from __future__ import annotations

import socket
import struct
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poolwatch.census import CensusParseError
from poolwatch.census._netlink import parse_chunk
from poolwatch.census._procfs import parse_table
from poolwatch.census._states import ALL_STATES_MASK

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- netlink -------------------------------------------------------------------------------------

HEADER = struct.Struct("=IHHII")


def nl_message(mtype: int, payload: bytes) -> bytes:
    body = HEADER.pack(16 + len(payload), mtype, 2, 1, 0) + payload
    return body + b"\0" * (-len(body) % 4)


def diag_payload(
    family: int,
    state: int,
    sport: int,
    dport: int,
    src: bytes,
    dst: bytes,
    uid: int,
    inode: int,
    attrs: int,
) -> bytes:
    """An inet_diag_msg as the kernel lays it out, followed by ``attrs`` bytes of attributes."""
    return (
        struct.pack("=BBBB", family, state, 0, 0)
        + struct.pack(">HH", sport, dport)
        + src.ljust(16, b"\0")
        + dst.ljust(16, b"\0")
        + struct.pack("=III", 1, 0, 0)
        + struct.pack("=IIIII", 0, 0, 0, uid, inode)
        + b"\xaa" * attrs
    )


DONE = nl_message(3, struct.pack("=i", 0))


@st.composite
def diag_socket(draw: st.DrawFn) -> tuple[tuple[int, int, bytes, int, bytes, int, int, int], int]:
    family = draw(st.sampled_from([socket.AF_INET, socket.AF_INET6]))
    size = 4 if family == socket.AF_INET else 16
    row = (
        family,
        draw(st.integers(1, 12)),
        draw(st.binary(min_size=size, max_size=size)),
        draw(st.integers(0, 65535)),
        draw(st.binary(min_size=size, max_size=size)),
        draw(st.integers(0, 65535)),
        draw(st.integers(0, 2**32 - 1)),
        draw(st.integers(0, 2**32 - 1)),
    )
    return row, draw(st.sampled_from([0, 0, 0, 8, 36]))


def encode(
    row: tuple[int, int, bytes, int, bytes, int, int, int], attrs: int, mtype: int = 20
) -> bytes:
    family, state, src, sport, dst, dport, uid, inode = row
    return nl_message(mtype, diag_payload(family, state, sport, dport, src, dst, uid, inode, attrs))


# Replies that carry no valid socket: each must be skipped and counted (or stepped over).
JUNK = st.one_of(
    st.tuples(st.just("short"), st.binary(max_size=71).map(lambda b: nl_message(20, b))),
    st.tuples(
        st.just("bad-state"),
        st.sampled_from([0, 13, 200]).map(
            lambda s: nl_message(20, diag_payload(2, s, 1, 2, b"\1" * 4, b"\2" * 4, 0, 7, 0))
        ),
    ),
    st.tuples(
        st.just("bad-family"),
        st.sampled_from([0, 1, 17]).map(
            lambda f: nl_message(20, diag_payload(f, 8, 1, 2, b"\1" * 4, b"\2" * 4, 0, 7, 0))
        ),
    ),
    st.tuples(st.just("noop"), st.binary(max_size=40).map(lambda b: nl_message(1, b))),
    st.tuples(st.just("other-type"), st.binary(max_size=40).map(lambda b: nl_message(99, b))),
)


def parse(data: bytes, *, inodes: set[int] | None = None) -> tuple[bool, list[int], list, int]:
    counts = [0] * 13
    rows: list = []
    done, skipped = parse_chunk(data, len(data), counts, rows, inodes)
    return done, counts, rows, skipped


@FUZZ
@given(
    st.lists(st.one_of(diag_socket().map(lambda s: ("sock", s)), JUNK), max_size=40),
    st.sampled_from([20, 18]),
)
def test_well_formed_dump_counts_every_socket_and_skips_junk(items: list, mtype: int) -> None:
    """Every valid reply is counted under its state and listed exactly; junk is skipped and
    counted (no-op and unknown message types are stepped over)."""
    data = b""
    expected_rows = []
    expected_skipped = 0
    for kind, item in items:
        if kind == "sock":
            row, attrs = item
            data += encode(row, attrs, mtype)
            expected_rows.append(row)
        else:
            data += item
            expected_skipped += kind in ("short", "bad-state", "bad-family")
    done, counts, rows, skipped = parse(data + DONE)
    assert done
    assert rows == expected_rows
    assert skipped == expected_skipped
    for state in range(1, 13):
        assert counts[state] == sum(1 for r in expected_rows if r[1] == state)
    # Counting alone (the fast path) gives the same numbers as listing.
    only = [0] * 13
    assert parse_chunk(data + DONE, len(data) + len(DONE), only) == (True, expected_skipped)
    assert only == counts


@FUZZ
@given(st.lists(diag_socket(), min_size=1, max_size=60), st.sets(st.integers(0, 2**32 - 1)))
def test_uniform_fast_path_equals_message_loop(socks: list, extra_inodes: set[int]) -> None:
    """The strided fast path (a run of same-length replies) gives what the per-message loop
    gives: a leading no-op message forces the loop on the same replies."""
    data = b"".join(encode(row, 8) for row, _ in socks)
    inodes = {row[7] for row, _ in socks[::2]} | extra_inodes
    noop = nl_message(1, b"")
    for wanted in (None, inodes):
        fast = parse(data, inodes=wanted)
        loop = parse(noop + data, inodes=wanted)
        assert fast == loop
        fast_counts, loop_counts = [0] * 13, [0] * 13
        assert parse_chunk(data, len(data), fast_counts, None, wanted) == parse_chunk(
            noop + data, len(data) + len(noop), loop_counts, None, wanted
        )
        assert fast_counts == loop_counts == fast[1]


@FUZZ
@given(st.lists(diag_socket(), min_size=1, max_size=30), st.data())
def test_truncated_dump_is_refused_or_counts_only_whole_messages(
    socks: list, data: st.DataObject
) -> None:
    """A dump cut anywhere either raises CensusParseError or, cut between messages, counts
    exactly the whole messages before the cut and does not claim to be done."""
    messages = [encode(row, attrs) for row, attrs in socks]
    whole = b"".join(messages)
    cut = data.draw(st.integers(0, len(whole) - 1))
    boundaries = {0}
    offset = 0
    for message in messages:
        offset += len(message)
        boundaries.add(offset)
    if cut not in boundaries:
        with pytest.raises(CensusParseError, match="netlink"):
            parse(whole[:cut])
        return
    done, counts, rows, skipped = parse(whole[:cut])
    assert not done
    assert rows == [row for row, _ in socks][: len(rows)]
    assert sum(counts) == len(rows)
    assert skipped == 0


@FUZZ
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_crash(blob: bytes) -> None:
    """Random bytes give a parse, a CensusParseError or a kernel-errno OSError, nothing else."""
    try:
        _done, counts, rows, skipped = parse(blob)
    except (CensusParseError, OSError):
        return
    assert all(n >= 0 for n in counts)
    assert sum(counts) == len(rows)
    assert skipped >= 0


def test_error_reply_raises_oserror_with_the_kernels_errno() -> None:
    """An NLMSG_ERROR reply raises OSError carrying the errno (EPERM here)."""
    data = nl_message(2, struct.pack("=i", -1) + bytes(16))
    with pytest.raises(OSError) as info:
        parse(data)
    assert info.value.errno == 1


def test_counts_needs_a_slot_per_state() -> None:
    """A counts list too short for the 13 kernel states is refused up front."""
    with pytest.raises(ValueError, match="13 slots"):
        parse_chunk(DONE, len(DONE), [0] * 5)


# -- /proc/net/tcp -------------------------------------------------------------------------------

HEADER_LINE = (
    b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
    b"timeout inode"
)


def hex_address(addr: bytes) -> bytes:
    """The kernel's %08X of each native-order 32-bit word."""
    words = struct.unpack(f"={len(addr) // 4}I", addr)
    return b"".join(b"%08X" % w for w in words)


def proc_line(number: int, row: tuple[int, int, bytes, int, bytes, int, int, int]) -> bytes:
    _family, state, src, sport, dst, dport, uid, inode = row
    return (
        b"%4d: %s:%04X %s:%04X %02X 00000000:00000000 00:00000000 00000000 %5d        0 %d 1 "
        b"0000000000000000 20 4 30 10 -1"
        % (number, hex_address(src), sport, hex_address(dst), dport, state, uid, inode)
    )


MUTATIONS = [
    lambda line: b" ".join(line.split()[:6]),  # truncated line
    lambda line: line.replace(b":", b"", 2),  # endpoints without a port
    lambda line: line.split(b" ", 4)[0] + b" ZZZZ",  # rubbish after the number
]


@st.composite
def table(draw: st.DrawFn, family: int) -> tuple[bytes, list, int]:
    size = 4 if family == socket.AF_INET else 16
    rows = []
    lines = [HEADER_LINE]
    bad = 0
    for number in range(draw(st.integers(0, 30))):
        row = (
            family,
            draw(st.integers(1, 12)),
            draw(st.binary(min_size=size, max_size=size)),
            draw(st.integers(0, 65535)),
            draw(st.binary(min_size=size, max_size=size)),
            draw(st.integers(0, 65535)),
            draw(st.integers(0, 2**31)),
            draw(st.integers(0, 2**32)),
        )
        line = proc_line(number, row)
        mutation = draw(st.sampled_from([None, None, None, *range(len(MUTATIONS))]))
        if mutation is None:
            rows.append(row)
        else:
            line = MUTATIONS[mutation](line)
            bad += 1
        lines.append(line)
    return b"\n".join(lines) + b"\n", rows, bad


@FUZZ
@given(
    st.sampled_from([socket.AF_INET, socket.AF_INET6]).flatmap(
        lambda f: st.tuples(st.just(f), table(f))
    )
)
def test_proc_table_counts_valid_lines_and_skips_corrupt_ones(case: tuple) -> None:
    """Valid lines are decoded exactly (addresses, ports, uid, inode); corrupt ones are skipped
    and counted, the same way whether counting or listing."""
    family, (text, expected, bad) = case
    rows: list = []
    counts = [0] * 13
    assert parse_table(text, family, ALL_STATES_MASK, counts, rows) == bad
    assert rows == expected
    only = [0] * 13
    assert parse_table(text, family, ALL_STATES_MASK, only) == bad
    assert only == counts
    assert sum(counts) == len(expected)


@FUZZ
@given(st.binary(max_size=800))
def test_proc_table_arbitrary_text_never_crashes(blob: bytes) -> None:
    """Any bytes as a table: lines are parsed or skipped, never an exception."""
    counts = [0] * 13
    rows: list = []
    skipped = parse_table(blob, socket.AF_INET6, ALL_STATES_MASK, counts, rows)
    assert sum(counts) == len(rows)
    assert skipped + len(rows) <= len(blob.split(b"\n"))


def test_proc_table_decodes_a_captured_line() -> None:
    """A line as the kernel prints it on this machine decodes to the address ss would show."""
    line = (
        b"   0: 0100007F:1F90 0100007F:A2C4 08 00000000:00000000 00:00000000 00000000  1000 0 "
        b"4242 1"
    )
    if sys.byteorder != "little":
        pytest.skip("the captured line is from a little-endian machine")
    rows: list = []
    parse_table(HEADER_LINE + b"\n" + line + b"\n", socket.AF_INET, ALL_STATES_MASK, None, rows)
    assert rows == [
        (
            socket.AF_INET,
            8,
            socket.inet_aton("127.0.0.1"),
            8080,
            socket.inet_aton("127.0.0.1"),
            41668,
            1000,
            4242,
        )
    ]
