"""Helper process for bench/census.py: holds N CLOSE_WAIT sockets (and a few others) on loopback.

    python bench/_census_sockets.py --close-wait 10000 --established 50 --time-wait 50

Prints one JSON line (pid, listening port, counts) once every socket is in place, then waits
for a line or EOF on stdin (or ``--max-seconds``, so it never outlives a crashed benchmark),
and closes everything with an RST (SO_LINGER 0) so nothing lingers in TIME_WAIT afterwards.

CLOSE_WAIT: the client connects, the server accepts and closes at once, the client never reads
or closes. The server's half becomes an orphan (no fd) in FIN_WAIT2, so the process needs one
fd per CLOSE_WAIT socket; one process is limited to its RLIMIT_NOFILE (20,000 here).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import select
import socket
import struct
import sys
import time

BATCH = 256
LINGER_RST = struct.pack("ii", 1, 0)


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return
        except (ValueError, OSError):
            sys.exit(f"need {needed} fds, RLIMIT_NOFILE hard limit is {hard}: split the load")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def build(family: int, close_wait: int, established: int, time_wait: int) -> dict[str, object]:
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.bind((host, 0))
    listener.listen(4096)
    addr = listener.getsockname()[:2]
    held: list[socket.socket] = []
    left = close_wait
    while left:
        batch = [socket.socket(family, socket.SOCK_STREAM) for _ in range(min(BATCH, left))]
        for client in batch:
            client.connect(addr)
        for _ in batch:
            server_side, _ = listener.accept()
            server_side.close()  # FIN: the client, which never closes, sits in CLOSE_WAIT
        held.extend(batch)
        left -= len(batch)
    for _ in range(established):
        client = socket.socket(family, socket.SOCK_STREAM)
        client.connect(addr)
        server_side, _ = listener.accept()
        held.extend((client, server_side))
    for _ in range(time_wait):
        client = socket.socket(family, socket.SOCK_STREAM)
        client.connect(addr)
        server_side, _ = listener.accept()
        client.close()  # active close first: the client side ends in TIME_WAIT
        server_side.close()
    return {"listener": listener, "held": held, "port": addr[1], "host": host}


def close_wait_held(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the kernel says are in CLOSE_WAIT, asked socket by socket
    (TCP_INFO's first byte is the state): a check independent of every census method."""
    held = 0
    for sock in socks:
        try:
            if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] == 8:  # TCP_CLOSE_WAIT
                held += 1
        except OSError:
            continue
    return held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--close-wait", type=int, default=1000)
    parser.add_argument("--established", type=int, default=0)
    parser.add_argument("--time-wait", type=int, default=0)
    parser.add_argument("--ipv6", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args()
    _raise_fd_limit(args.close_wait + 2 * args.established + 64)
    family = socket.AF_INET6 if args.ipv6 else socket.AF_INET
    start = time.monotonic()
    built = build(family, args.close_wait, args.established, args.time_wait)
    held: list[socket.socket] = built["held"]  # type: ignore[assignment]
    print(
        json.dumps(
            {
                "pid": __import__("os").getpid(),
                "host": built["host"],
                "port": built["port"],
                "close_wait": args.close_wait,
                "close_wait_held": close_wait_held(held),
                "established": 2 * args.established,
                "time_wait": args.time_wait,
                "build_seconds": round(time.monotonic() - start, 3),
            }
        ),
        flush=True,
    )
    # "count" asks again (a connection may be reset while the bench runs); anything else, or
    # end of input, or max_seconds, ends the helper.
    deadline = start + args.max_seconds
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], max(0.0, deadline - time.monotonic()))
        if not ready or sys.stdin.readline().strip() != "count":
            break
        print(json.dumps({"close_wait_held": close_wait_held(held)}), flush=True)
    for sock in held:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        sock.close()
    built["listener"].close()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
