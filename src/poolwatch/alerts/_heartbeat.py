"""Heartbeat: ping a dead-man's switch so that a monitor that died or hung is noticed.

The protocol is healthchecks.io's (also spoken by Uptime Kuma push monitors and Cronitor
heartbeats): a GET (or POST) to the check's URL says "alive"; ``<url>/fail`` says "alive but
broken", with the reason as the body. poolwatch pings ``/fail`` when its sampler stopped ticking
or an alert channel is failing, so the outside world hears what poolwatch itself cannot send.
If the whole process dies, the pings stop, and the switch fires on its own.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from ._ledger import Ledger
from ._notifiers import redact_url

__all__ = ["Heartbeat"]

log = logging.getLogger("poolwatch.alerts")


class Heartbeat:
    """Ping ``url`` every ``interval`` seconds; ``<url>/fail`` while ``check()`` says broken.

    ``check()`` returns ``(ok, reason)``; by default the process is always fine. Each ping is
    recorded in ``ledger`` as channel ``heartbeat``.
    """

    def __init__(
        self,
        url: str,
        *,
        interval: float = 60.0,
        timeout: float = 10.0,
        check: Callable[[], tuple[bool, str]] | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(
                f"heartbeat.url {redact_url(url)!r}: expected an http:// or https:// URL"
            )
        if interval <= 0:
            raise ValueError(f"heartbeat.interval = {interval!r}: expected seconds > 0")
        self.url = url.rstrip("/")
        self.interval = interval
        self.timeout = timeout
        self.check = check or (lambda: (True, "ok"))
        self.ledger = ledger
        self.pings = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<Heartbeat {redact_url(self.url)} every {self.interval:g} s [{self.pings} pings]>"

    def start(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._run, name="poolwatch-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.ping()
            self._stop.wait(self.interval)

    def ping(self) -> bool:
        """One ping (``/fail`` with the reason when the check fails); True if it got a 2xx."""
        try:
            ok, reason = self.check()
        except Exception as exc:
            ok, reason = False, f"health check raised {exc!r}"
        url = self.url if ok else self.url + "/fail"
        body = reason.encode()[:10_000]
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"User-Agent": "poolwatch-heartbeat"}
        )
        start = time.monotonic()
        where = redact_url(url) + ("" if ok else " (/fail)")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                resp.read(1024)
                status = resp.status
            delivered = bool(200 <= status < 300)
            detail = f"{status} from {where}" + ("" if ok else f": {reason}")
        except urllib.error.HTTPError as exc:
            exc.close()
            delivered, detail = False, f"{where} answered {exc.code} {exc.reason}"
        except (OSError, ValueError) as exc:
            delivered, detail = False, f"{where}: {exc!r}"
        self.pings += 1
        if self.ledger is not None:
            self.ledger.record(
                notification="heartbeat",
                kind="heartbeat" if ok else "heartbeat-fail",
                subject="heartbeat" if ok else f"heartbeat /fail: {reason}",
                channel="heartbeat",
                outcome="delivered" if delivered else "failed",
                detail=detail,
                latency=time.monotonic() - start,
            )
        if not delivered:
            log.warning("poolwatch: heartbeat ping failed: %s", detail)
        return delivered
