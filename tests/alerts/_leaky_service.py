"""A monitored service for the restart test: leaks to 75% with its SMTP server down, then waits.

Run as ``python _leaky_service.py SMTP_PORT DOWN_HOST DOWN_PORT SPOOL_DIR``; prints
``UNDELIVERED <notification id>`` once the alert failed and sits in the spool, then sleeps until
killed (the test kills it with SIGKILL: no clean shutdown, no chance to deliver).
"""

from __future__ import annotations

import sys
import time

import urllib3

from poolwatch._runtime import start


def main() -> None:
    smtp_port, host, port, spool = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    runtime = start(
        {
            "interval": "100ms",
            "census": False,
            "log": False,
            "pools": [f"urllib3 http://{host}:{port}"],
            "rules": {"warning_for": 0, "leak_age": "1h"},
            "smtp": {
                "host": "127.0.0.1",
                "port": int(smtp_port),
                "sender": "poolwatch@test.local",
                "to": ["oncall@test.local"],
                "timeout": 2,
            },
            "delivery": {"retry_base": "200ms", "retry_max": "1s", "spool": spool},
        },
        instrument=["urllib3"],
    )
    pool = urllib3.HTTPConnectionPool(host, port, maxsize=4, block=True)
    held = [pool.request("GET", "/", preload_content=False) for _ in range(3)]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        failed = [
            e
            for e in runtime.ledger.entries(100)
            if e.channel == "smtp" and e.kind == "firing" and e.outcome == "failed"
        ]
        if failed:
            print(f"UNDELIVERED {failed[0].notification}", flush=True)
            break
        time.sleep(0.05)
    else:
        print("NO ALERT", flush=True)
    time.sleep(60)
    print(len(held))  # pragma: no cover - killed before this


if __name__ == "__main__":
    main()
