"""A real PostgreSQL server on 127.0.0.1, in a temporary directory: for the tests and bench/.

Debian's PostgreSQL, initialised with a password (scram-sha-256) and started on a free port, as
``nobody`` when this runs as root (PostgreSQL refuses to run as root). fsync is off: nothing
here needs to survive a crash.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server can be started here (not installed, or root without setpriv)."""


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_postgres(user: str, password: str, max_connections: int = 40) -> Iterator[int]:
    """Start a server whose superuser is ``user``; yield its port; stop it and delete its files.

    Raises PostgresUnavailable when it cannot be started here, RuntimeError (with the end of
    the server's log) when it was started and did not come up within 30 s.
    """
    bindir = _bindir()
    if bindir is None:
        raise PostgresUnavailable(
            "PostgreSQL server binaries not installed (apt-get install postgresql)"
        )
    as_user = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    if os.geteuid() != 0:
        as_user = []
    elif shutil.which("setpriv") is None:
        raise PostgresUnavailable(
            "running as root without setpriv: cannot start PostgreSQL as another user"
        )
    import psycopg

    root = Path(tempfile.mkdtemp(prefix="poolwatch-pg-"))
    pwfile = root / "pw"
    pwfile.write_text(password + "\n")
    if as_user:
        for path in (root, pwfile):
            os.chown(path, 65534, 65534)
    data = root / "data"
    proc = None
    try:
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", user, "-E", "UTF8"]
        initdb += ["--auth=scram-sha-256", f"--pwfile={pwfile}", "--no-sync"]
        subprocess.run([*as_user, *initdb], check=True, capture_output=True, timeout=120)
        port = _free_port()
        server = [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1"]
        server += ["-k", str(root), "-c", "fsync=off", "-c", f"max_connections={max_connections}"]
        with open(root / "log", "wb") as log:
            proc = subprocess.Popen([*as_user, *server], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(
                    host="127.0.0.1", port=port, user=user, password=password, dbname="postgres"
                ).close()
                break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = (root / "log").read_text()[-800:]
                    raise RuntimeError(f"PostgreSQL did not start: {tail}") from None
                time.sleep(0.1)
        yield port
    finally:
        if proc is not None:
            # SIGINT is PostgreSQL's fast shutdown: it does not wait for clients to leave.
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)
