"""OpenTelemetry observable instruments over the tracker (needs only opentelemetry-api).

The SDK, a reader and an exporter are the application's choice; poolwatch registers callbacks
on a meter from the global (or a given) meter provider, and each collection reads the tracker
afresh. OpenTelemetry has no asynchronous histogram, so live-lease ages appear as the oldest
age per pool (``poolwatch.lease.age.max``) rather than as the Prometheus histogram.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ._measure import DEFAULT_SUSPECT_AFTER, Measurement, PoolMeasure, measure
from ._sources import census_states, ledger_outcomes

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

    from .._tracker import Tracker

__all__ = ["OpenTelemetryMetrics", "instrument_opentelemetry"]


class OpenTelemetryMetrics:
    """The registered instruments; ``stop()`` makes their callbacks observe nothing.

    (The OpenTelemetry API has no way to unregister an observable instrument.)
    """

    def __init__(
        self,
        tracker: Tracker | Callable[[], Tracker] | None,
        runtime: Any,
        suspect_after: float,
        census: bool,
    ) -> None:
        self._tracker = tracker
        self.runtime = runtime
        self.suspect_after = suspect_after
        self.census = census
        self.enabled = True
        self.instruments: list[Any] = []

    def __repr__(self) -> str:
        state = "enabled" if self.enabled else "stopped"
        return f"<OpenTelemetryMetrics [{len(self.instruments)} instruments | {state}]>"

    def stop(self) -> None:
        """Stop observing: every callback returns no observation from now on."""
        self.enabled = False

    @property
    def tracker(self) -> Tracker:
        source = self._tracker
        if source is None:
            from .._api import get_tracker

            return get_tracker()
        if callable(source) and not hasattr(source, "snapshot"):
            return source()
        return source  # type: ignore[return-value]

    def _read(self, ages: bool = False) -> Measurement | None:
        if not self.enabled:
            return None
        tracker = self.tracker
        try:
            return measure(tracker, suspect_after=self.suspect_after, ages=ages)
        except Exception as exc:
            tracker.internal_error("export.opentelemetry", exc)
            return None

    def _pools(
        self,
        family: str,
        fn: Callable[[PoolMeasure], Iterable[tuple[float, dict[str, Any]]]],
        *,
        ages: bool = False,
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        from opentelemetry.metrics import Observation

        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            reading = self._read(ages)
            if reading is None:
                return []
            return [
                Observation(value, attributes)
                for pool in reading.pools
                if family in ("any", pool.family)
                for value, attributes in fn(pool)
            ]

        return callback

    def _register(self, meter: Any) -> None:
        def http(pool: PoolMeasure, state: str) -> dict[str, Any]:
            attrs: dict[str, Any] = {"http.connection.state": state, "pool": pool.label}
            if pool.server_address:
                attrs["server.address"] = pool.server_address
            if pool.server_port:
                attrs["server.port"] = int(pool.server_port)
            return attrs

        def http_open(pool: PoolMeasure) -> list[tuple[float, dict[str, Any]]]:
            out: list[tuple[float, dict[str, Any]]] = [(pool.leased, http(pool, "active"))]
            if pool.idle is not None:
                out.append((pool.idle, http(pool, "idle")))
            return out

        def db_name(pool: PoolMeasure) -> dict[str, Any]:
            return {"db.client.connection.pool.name": pool.label}

        def db_count(pool: PoolMeasure) -> list[tuple[float, dict[str, Any]]]:
            out: list[tuple[float, dict[str, Any]]] = [
                (pool.leased, {**db_name(pool), "db.client.connection.state": "used"})
            ]
            if pool.idle is not None:
                out.append((pool.idle, {**db_name(pool), "db.client.connection.state": "idle"}))
            return out

        def by_pool(pool: PoolMeasure) -> dict[str, Any]:
            return {"pool": pool.label}

        add = self.instruments.append
        updown = meter.create_observable_up_down_counter
        counter = meter.create_observable_counter
        gauge = meter.create_observable_gauge
        add(
            updown(
                "http.client.open_connections",
                [self._pools("http", http_open)],
                unit="{connection}",
                description="Connections of HTTP client pools, by state (active = leased).",
            )
        )
        add(
            updown(
                "db.client.connection.count",
                [self._pools("db", db_count)],
                unit="{connection}",
                description="Connections of database client pools, by state (used = leased).",
            )
        )
        add(
            updown(
                "db.client.connection.max",
                [self._pools("db", lambda p: [(p.max, db_name(p))] if p.max is not None else [])],
                unit="{connection}",
                description="Maximum connections a database client pool allows.",
            )
        )
        add(
            updown(
                "db.client.connection.pending_requests",
                [self._pools("db", lambda p: [(p.waiting, db_name(p))])],
                unit="{request}",
                description="Callers waiting for a connection of a database client pool.",
            )
        )
        add(
            counter(
                "db.client.connection.timeouts",
                [self._pools("db", lambda p: [(p.exhaustions, db_name(p))])],
                unit="{timeout}",
                description="Callers that timed out waiting for a database connection.",
            )
        )
        add(
            gauge(
                "poolwatch.pool.max",
                [self._pools("http", lambda p: [(p.max, by_pool(p))] if p.max is not None else [])],
                unit="{connection}",
                description="Maximum connections an HTTP pool keeps.",
            )
        )
        add(
            gauge(
                "poolwatch.pool.pending",
                [self._pools("http", lambda p: [(p.waiting, by_pool(p))])],
                unit="{request}",
                description="Callers waiting for a connection.",
            )
        )
        add(
            counter(
                "poolwatch.pool.timeouts",
                [self._pools("http", lambda p: [(p.exhaustions, by_pool(p))])],
                unit="{timeout}",
                description="Callers that timed out waiting for a connection (exhaustion).",
            )
        )
        add(
            gauge(
                "poolwatch.leaks.suspected",
                [self._pools("any", lambda p: [(p.suspected, by_pool(p))], ages=True)],
                unit="{lease}",
                description=f"Live leases older than {self.suspect_after:g} s.",
            )
        )
        add(
            counter(
                "poolwatch.leaks.confirmed",
                [
                    self._pools(
                        "any",
                        lambda p: [
                            (n, {"pool": p.label, "callsite": site})
                            for site, n in p.leaks_by_callsite.items()
                        ],
                    )
                ],
                unit="{lease}",
                description="Leases whose owner was collected, or pool closed, while leased.",
            )
        )
        add(
            gauge(
                "poolwatch.lease.age.max",
                [
                    self._pools(
                        "any", lambda p: [(max(p.ages), by_pool(p))] if p.ages else [], ages=True
                    )
                ],
                unit="s",
                description="Age of the oldest live lease of each pool.",
            )
        )
        add(
            counter(
                "poolwatch.internal.errors",
                [self._errors],
                unit="{error}",
                description="Faults inside poolwatch, caught and counted.",
            )
        )
        if self.census:
            add(
                gauge(
                    "poolwatch.tcp.sockets",
                    [self._sockets],
                    unit="{socket}",
                    description="This process's TCP sockets by state.",
                )
            )
        if getattr(self.runtime, "ledger", None) is not None:
            add(
                counter(
                    "poolwatch.alert.notifications",
                    [self._notifications],
                    unit="{notification}",
                    description="Alert notifications by channel and outcome.",
                )
            )

    def _errors(self, _options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        reading = self._read()
        if reading is None:
            return []
        return [Observation(n, {"where": w}) for w, n in sorted(reading.internal_errors.items())]

    def _sockets(self, _options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        if not self.enabled:
            return []
        try:
            states = census_states()
        except Exception as exc:
            self.tracker.internal_error("export.census", exc)
            return []
        if states is None:
            return []
        return [Observation(n, {"state": s}) for s, n in sorted(states.items())]

    def _notifications(self, _options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        if not self.enabled:
            return []
        try:
            outcomes = ledger_outcomes(self.runtime)
        except Exception as exc:
            self.tracker.internal_error("export.ledger", exc)
            return []
        if outcomes is None:
            return []
        return [
            Observation(n, {"channel": c, "outcome": o}) for (c, o), n in sorted(outcomes.items())
        ]


def instrument_opentelemetry(
    tracker: Tracker | Callable[[], Tracker] | None = None,
    *,
    meter_provider: MeterProvider | None = None,
    runtime: Any = None,
    suspect_after: float = DEFAULT_SUSPECT_AFTER,
    census: bool = True,
) -> OpenTelemetryMetrics:
    """Register poolwatch's observable instruments on a meter named ``poolwatch``.

    Uses the global meter provider unless ``meter_provider`` is given. Raises ``ImportError``
    with the install command when opentelemetry-api is missing.
    """
    try:
        from opentelemetry import metrics
    except ImportError as exc:
        raise ImportError(
            "poolwatch's OpenTelemetry metrics need opentelemetry-api: "
            "pip install 'poolwatch[otel]'"
        ) from exc
    from .. import __version__

    meter = metrics.get_meter("poolwatch", __version__, meter_provider=meter_provider)
    handle = OpenTelemetryMetrics(tracker, runtime, suspect_after, census)
    handle._register(meter)
    return handle
