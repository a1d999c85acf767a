"""`poolwatch demo`: the incident, replayed on 127.0.0.1 and diagnosed by poolwatch.

A service asks a downstream for permission and reads only the status code. Through a load
balancer, the 403 answers carry an HTML error page; each unread answer keeps its connection
leased. The pool (8 here, 1024 in the incident) runs dry. poolwatch names the line and the
response, shows the caller stuck waiting, and the fixed code keeps the pool flat.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

POOL_SIZE = 8


def _say(text: str = "") -> None:
    print(text, flush=True)


def _heading(text: str) -> None:
    _say()
    _say(f"== {text} " + "=" * max(0, 74 - len(text)))


def run(*, serve: bool = False) -> int:
    """Replay the incident; returns the process exit code (0 when the story played out).

    ``serve=True`` keeps the admin dashboard up after the story, until Ctrl-C.
    """
    import requests
    import urllib3

    import poolwatch
    from poolwatch._runtime import start
    from poolwatch.alerts._smtpsink import SmtpSink
    from poolwatch.examples.incident import (
        check_permission,
        check_permission_fixed,
        check_permission_urllib3,
    )
    from poolwatch.testing._downstream import Downstream

    poolwatch.instrument("urllib3")
    tracker = poolwatch.get_tracker()

    with Downstream(load_balancer=True) as downstream, SmtpSink() as mailbox:
        # The downstream's own 403 has no body (what the mock returned); the load balancer in
        # front of it replaces every 4xx/5xx body with its HTML error page.
        downstream.route("/permissions/alice", status=403, body="empty")
        url = downstream.url_for("/permissions/alice")

        session = requests.Session()
        session.mount(
            "http://",
            requests.adapters.HTTPAdapter(pool_maxsize=POOL_SIZE, pool_block=True),
        )

        # The lesson "a pool at ~75% should alert, and alerts must be proven to arrive": an
        # embedded SMTP server stands in for the on-call mailbox.
        runtime = start(
            {
                "interval": 0.2,
                "log": False,
                "pools": [f"* {downstream.url}"],
                "rules": {"warning_for": 0, "critical_for": 0},
                "smtp": {
                    "host": mailbox.host,
                    "port": mailbox.port,
                    "sender": "poolwatch@localhost",
                    "to": ["oncall@localhost"],
                },
            },
            instrument=["urllib3"],
            spool=False,
            admin="127.0.0.1:0",
        )
        _say(f"Dashboard (live during the demo): {runtime.admin.dashboard_url}")

        _heading(f"1. The leak: {POOL_SIZE} permission checks answered 403 through the LB")
        warn_at = POOL_SIZE * 3 // 4
        for _ in range(warn_at):
            check_permission(session, url)
        _say(
            f"{warn_at} of {POOL_SIZE} connections leaked: the pool is at 75%. The on-call mailbox:"
        )
        if mailbox.wait(1, timeout=10):
            message = mailbox.messages[0]
            _say(f"  Subject: {message['Subject']}")
            for line in str(message.get_content()).strip().splitlines():
                _say(f"  | {line}")
        else:
            _say("  (no e-mail arrived within 10 s)")
        for _ in range(POOL_SIZE - warn_at):
            check_permission(session, url)
        (pool,) = [p for p in poolwatch.pools() if p.name == downstream.url]
        _say(repr(pool))
        _say("Leased connections by the line that took them:")
        for line in _group(pool.leases):
            _say("  " + line)

        _heading("2. The outage: the next caller waits for a connection, forever")
        stuck = threading.Thread(
            target=check_permission, args=(session, url), name="request-handler-9", daemon=True
        )
        stuck.start()
        deadline = time.monotonic() + 5
        while not poolwatch.get_tracker().snapshot().pools[0].waiters and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        time.sleep(0.5)
        for snap in tracker.snapshot().pools:
            for waiter in snap.waiters:
                _say(
                    f"waiting {waiter.waited:.1f} s: thread {waiter.thread_name} at "
                    f"{waiter.callsite} (requests passes no pool timeout: it never gives up)"
                )
        _say()
        _say("With a pool timeout, the error that said nothing now says everything:")
        with urllib3.PoolManager(maxsize=2, block=True) as http:
            try:
                for _ in range(3):
                    check_permission_urllib3(http, url)
            except urllib3.exceptions.EmptyPoolError as exc:
                _say(f"urllib3.exceptions.EmptyPoolError: {exc}")
                for note in getattr(exc, "__notes__", []):
                    _say(note)

        _heading("3. The fix: the same checks with `with session.get(...) as response:`")
        fixed = requests.Session()
        fixed.mount(
            "http://",
            requests.adapters.HTTPAdapter(pool_maxsize=POOL_SIZE, pool_block=True),
        )
        before = tracker.seq
        for _ in range(100):
            check_permission_fixed(fixed, url)
        leaks = tracker.leaks_since(before)
        fixed_pool = [
            p for p in tracker.snapshot().pools if p.name == downstream.url and p.checkouts == 100
        ]
        if fixed_pool:
            _say(repr(fixed_pool[0]))
        _say(f"100 checks, {len(leaks)} connections leaked.")
        fixed.close()
        mailed = bool(mailbox.messages)

    _heading("4. The hunt: which downstream responses make this code leak?")
    leaky_report, fixed_report = _hunt()
    _say(leaky_report.text())
    _say()
    _say(fixed_report.text())
    hunted = bool(leaky_report.leaking) and not fixed_report.failing
    if serve:
        _say()
        _say(f"Serving the dashboard at {runtime.admin.dashboard_url} until Ctrl-C.")
        with contextlib.suppress(KeyboardInterrupt):
            runtime.admin.wait()
    runtime.stop()
    ok = pool.leased == POOL_SIZE and not leaks and mailed and hunted
    _say()
    _say("The demo played out as expected." if ok else "UNEXPECTED: see the figures above.")
    return 0 if ok else 1


#: The hunt's scenarios for the demo: the incident's 403s and the responses around them.
HUNT_PATTERNS = (
    "200 json identity keep-alive",
    "204 *",
    "403 * identity keep-alive",
    "403 empty identity load-balancer",
    "200 reset-mid-body *",
)


def _hunt() -> tuple[Any, Any]:
    from poolwatch.examples.incident import permission_check, permission_check_fixed
    from poolwatch.testing._hunt import hunt
    from poolwatch.testing._scenarios import default_scenarios, select

    scenarios = select(default_scenarios(), HUNT_PATTERNS)
    return hunt(permission_check, scenarios), hunt(permission_check_fixed, scenarios)


def _group(leases: Any) -> list[str]:
    from poolwatch._tracker import group_by_callsite

    return group_by_callsite(leases)


def main() -> None:
    raise SystemExit(run())


if __name__ == "__main__":
    main()
