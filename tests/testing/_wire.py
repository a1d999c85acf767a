"""Raw-socket helpers: read exactly what the downstream puts on the wire."""

from __future__ import annotations

import socket

from poolwatch.testing import Downstream


def raw_exchange(ds: Downstream, request: bytes, *, timeout: float = 5.0) -> bytes:
    """Send ``request`` on a fresh connection and read until the server closes it."""
    family = socket.AF_INET6 if ":" in ds.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect((ds.host, ds.port))
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


def raw_get(ds: Downstream, path: str, *, method: str = "GET") -> tuple[bytes, bytes]:
    """(head, body bytes as sent, framing included) of one request with Connection: close."""
    data = raw_exchange(
        ds, f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def header_lines(head: bytes) -> dict[str, str]:
    """The header lines of a raw response head, names lower-cased."""
    out = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        out[name.strip().lower()] = value.strip()
    return out
