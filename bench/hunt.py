"""The hunt's cost: the default matrix, isolated per scenario, vs the same calls on one server.

`python -m bench hunt`. The baseline makes the same client call once per scenario against one
long-lived downstream (no isolation, no census, no deadline thread); the hunt variants pay for a
fresh downstream, a worker thread, a GC pass and a socket census per scenario. The issue's
budget is the absolute time: the default matrix under 30 s on a 2-core machine.
"""

from __future__ import annotations

from tests.examples import hunt_incident

import poolwatch
from poolwatch.testing import Downstream, default_scenarios, hunt

from ._common import alternate, print_table


def main() -> None:
    poolwatch.instrument()
    scenarios = default_scenarios()
    server = Downstream().start()

    def baseline() -> None:
        for scenario in scenarios:
            server.load_balancer = scenario.load_balancer
            server.enqueue(scenario.reply)
            hunt_incident.fetch_status_fixed(server.url)

    def hunt_fixed() -> None:
        hunt(hunt_incident.fetch_status_fixed, scenarios)

    def hunt_leaky() -> None:
        hunt(hunt_incident.fetch_status, scenarios)

    try:
        results = alternate(
            {
                "same calls, one shared downstream": baseline,
                "hunt, fixed function (default matrix)": hunt_fixed,
                "hunt, leaky function (default matrix)": hunt_leaky,
            },
            calls=1,
            rounds=3,
        )
    finally:
        server.stop()
    print_table(
        f"hunt over the default matrix ({len(scenarios)} scenarios), seconds per run",
        list(results.items()),
        baseline="same calls, one shared downstream",
        unit="s",
        scale=1.0,
    )
    worst = max(results.values())
    print(f"  slowest hunt {worst:.1f} s; budget 30 s: {'ok' if worst < 30 else 'OVER'}")


if __name__ == "__main__":
    main()
