"""Rule and engine behaviour on synthetic series and a synthetic clock (RuleTest)."""

from __future__ import annotations

import pytest

from poolwatch.alerts import Rules, RuleTest, expand_series, format_duration, linear_fit

POOL = "urllib3 http://api:80"


def test_expand_series_follows_promtool_notation() -> None:
    """'0+1x3', '5x2', '10-2x2' and '_' expand like promtool's input series."""
    assert expand_series("0+1x3 5x2 10-2x2 _ 7") == [0, 1, 2, 3, 5, 5, 5, 10, 8, 6, None, 7]


def test_expand_series_rejects_bad_terms() -> None:
    """A term that is not a number or promtool notation names itself in the error."""
    with pytest.raises(ValueError, match="'3y'"):
        expand_series("1 3y")


def test_warning_goes_pending_then_fires_after_its_for_duration() -> None:
    """At 80% the warning is pending until `warning_for` has passed, then fires once."""
    t = RuleTest(Rules(warning_for=30, leak_age=0), interval=10)
    t.pool(POOL, max=10, leased="5x2 8x10")
    t.assert_alerts(at=20, firing=[])
    t.assert_alerts(at=30, pending=["PoolUtilisationHigh"])
    t.assert_alerts(at=50, pending=["PoolUtilisationHigh"])
    t.assert_alerts(at=60, firing=["PoolUtilisationHigh"])
    fired = t.sent("firing")
    assert [when for when, _ in fired] == [60]
    assert "8 of 10 connections leased (80%)" in fired[0][1].subject


def test_short_spike_never_fires() -> None:
    """A spike shorter than `for` returns to inactive without any notification."""
    t = RuleTest(Rules(warning_for=30, leak_age=0), interval=10)
    t.pool(POOL, max=10, leased="2 8 8 2x5")
    t.run(until=80)
    assert t.sent() == []
    assert [(tr.old, tr.new) for tr in t.engine.transitions()] == [
        ("inactive", "pending"),
        ("pending", "inactive"),
    ]


def test_oscillation_around_75_percent_does_not_flap() -> None:
    """Utilisation swinging 72%..78% (inside the hysteresis band) fires once, never resolves."""
    t = RuleTest(Rules(warning_for=20, hysteresis=0.05, leak_age=0), interval=10)
    swings = " ".join(["78 72"] * 20)
    t.pool(POOL, max=100, leased=swings)
    t.run(until=390)
    assert len(t.sent("firing")) == 1
    assert t.sent("resolved") == []
    assert t.alerts_at(390)["PoolUtilisationHigh"] == "firing"


def test_without_hysteresis_the_same_oscillation_would_flap() -> None:
    """The counter-check: with no hysteresis and no `for`, the same swings notify repeatedly."""
    t = RuleTest(Rules(warning_for=0, hysteresis=0.0, leak_age=0), interval=10)
    t.pool(POOL, max=100, leased=" ".join(["78 72"] * 5))
    t.run(until=90)
    assert len(t.sent("firing")) == 5
    assert len(t.sent("resolved")) == 5


def test_warning_resolves_below_the_hysteresis_band() -> None:
    """The warning resolves only once utilisation drops below threshold - hysteresis."""
    t = RuleTest(Rules(warning_for=0, hysteresis=0.05, leak_age=0), interval=10)
    t.pool(POOL, max=100, leased="80 71 70 69 50")
    t.assert_alerts(at=20, firing=["PoolUtilisationHigh"])
    t.assert_alerts(at=30, firing=[])
    ((when, note),) = t.sent("resolved")
    assert when == 30
    assert note.alerts[0].state == "resolved"


def test_exhausted_fires_at_once_and_inhibits_the_75_percent_warning() -> None:
    """A pool timeout fires PoolExhausted immediately; the warning is silenced in the message."""
    t = RuleTest(Rules(warning_for=0, critical_for=0, leak_age=0), interval=10)
    t.pool(POOL, max=10, leased="8x10", exhaustions="0 0 1 1x8")
    t.run(until=20)
    firing = t.sent("firing")
    assert len(firing) == 2
    first, second = firing[0][1], firing[1][1]
    assert [a.name for a in first.alerts] == ["PoolUtilisationHigh"]
    assert [a.name for a in second.alerts] == ["PoolExhausted"]
    inhibited = [a for a in t.engine.active() if a.inhibited_by == "PoolExhausted"]
    assert [a.name for a in inhibited] == ["PoolUtilisationHigh"]


def test_exhausted_while_75_percent_is_pending_means_no_75_percent_mail() -> None:
    """When exhaustion arrives while the warning waits out its `for`, only exhaustion is sent."""
    t = RuleTest(Rules(warning_for=10, leak_age=0, exhausted_hold=1000), interval=10)
    t.pool(POOL, max=10, leased="8x10", exhaustions="0 1x10")
    t.run(until=100)
    sent = [a.name for _, n in t.sent() for a in n.alerts]
    assert sent == ["PoolExhausted"]
    assert t.alerts_at(100)["PoolUtilisationHigh"] == "firing"  # firing, but silenced


def test_hung_waiter_counts_as_exhaustion() -> None:
    """A caller blocked longer than `hang_after` (requests, no pool timeout) is exhaustion."""
    t = RuleTest(Rules(hang_after=30, leak_age=0), interval=10)
    t.pool(POOL, max=4, leased="4x10", waiting="0 1x9")
    t.assert_alerts(at=30, firing=["PoolUtilisationCritical", "PoolUtilisationHigh"])
    t.assert_alerts(
        at=40, firing=["PoolExhausted", "PoolUtilisationCritical", "PoolUtilisationHigh"]
    )
    assert "blocked waiting for a connection" in t.sent("firing")[-1][1].text


def test_critical_inhibits_warning() -> None:
    """Past 90% the critical alert is sent and the 75% warning is not repeated beside it."""
    t = RuleTest(Rules(warning_for=0, critical_for=0, leak_age=0), interval=10)
    t.pool(POOL, max=10, leased="8 8 10 10")
    t.run(until=30)
    (_, _first), (_, second) = t.sent("firing")
    assert [a.name for a in second.alerts] == ["PoolUtilisationCritical"]
    assert second.subject.startswith("[poolwatch] FIRING critical")


def test_repeat_interval_resends_while_firing() -> None:
    """A group that keeps firing is notified again every repeat_interval, not every sample."""
    t = RuleTest(Rules(warning_for=0, repeat_interval=60, leak_age=0), interval=10)
    t.pool(POOL, max=10, leased="8x20")
    t.run(until=200)
    assert [when for when, _ in t.sent()] == [0, 60, 120, 180]
    assert [n.kind for _, n in t.sent()] == ["firing", "repeat", "repeat", "repeat"]


def test_predicted_exhaustion_names_rate_and_time() -> None:
    """A pool leaking 1 connection per 5 min is predicted full, with leaks/h and time left."""
    rules = Rules(warning_for=10_000, trend_window=3600, predict_horizon=4 * 3600, leak_age=0)
    t = RuleTest(rules, interval=300)
    t.pool(POOL, max=40, leased="10+1x20")
    t.run(until=6000)
    ((when, note),) = t.sent("firing")
    # Half the trend window (1800 s) must be covered before a fit counts: 16 leased then,
    # 24 to go at 12 leaks/h is 2 h, inside the 4 h horizon.
    assert when == 1800
    assert note.alerts[0].name == "PoolExhaustionPredicted"
    assert "at 12.0 leaks/h the pool is full in 2 h (16 of 40 leased now)" in note.alerts[0].summary
    assert "Trend:        +12.0 leaks/h; at this rate the pool is full in 2 h" in note.text


def test_no_prediction_for_a_flat_pool() -> None:
    """A busy but steady pool gives no predicted-exhaustion alert."""
    t = RuleTest(Rules(warning_for=10_000, trend_window=600, leak_age=0), interval=60)
    t.pool(POOL, max=100, leased="50x30")
    t.run(until=1800)
    assert t.sent() == []


def test_suspected_leak_names_call_site_and_reports_the_return() -> None:
    """Leases older than leak_age fire SuspectedLeak with their call site; a return is told."""
    t = RuleTest(Rules(leak_age=60, warning_for=10_000), interval=10)
    t.pool(POOL, max=100, leased="0 1x10 0x3", callsite="app/billing.py:42 in charge")
    t.run(until=140)
    ((_, fired),) = t.sent("firing")
    assert fired.alerts[0].name == "SuspectedLeak"
    assert "1 x app/billing.py:42 in charge" in fired.text
    ((_, resolved),) = t.sent("resolved")
    assert "lease from app/billing.py:42 in charge returned after" in resolved.text


def test_close_wait_growth_is_a_process_alert() -> None:
    """CLOSE_WAIT rising by close_wait_growth within the window fires CloseWaitGrowing."""
    t = RuleTest(Rules(close_wait_growth=10, close_wait_window=300, leak_age=0), interval=30)
    t.close_wait("2 2 2 5 9 14 20")
    t.run(until=180)
    ((_, note),) = t.sent("firing")
    assert note.group == "process"
    assert "CLOSE_WAIT" in note.alerts[0].summary


def test_pool_that_disappears_resolves_its_alerts() -> None:
    """A pool gone from the snapshot (collected) resolves its firing alerts."""
    t = RuleTest(Rules(warning_for=0, leak_age=0), interval=10)
    t.pool(POOL, max=10, leased="9")
    t.run(until=0)
    t._pools.clear()
    t.run(until=10)
    assert [n.kind for _, n in t.sent()] == ["firing", "resolved"]


def test_disabled_rules_never_fire() -> None:
    """An alert named in rules.disabled is not raised."""
    t = RuleTest(Rules(warning_for=0, disabled=frozenset({"PoolUtilisationHigh"})), interval=10)
    t.pool(POOL, max=10, leased="8x3")
    t.run(until=30)
    assert t.sent() == []


def test_rules_reject_a_critical_below_warning() -> None:
    """A critical threshold below the warning one is refused with both values named."""
    with pytest.raises(
        ValueError, match=r"utilisation_critical = 0.5 .*utilisation_warning = 0.75"
    ):
        Rules(utilisation_critical=0.5)


def test_linear_fit_and_durations() -> None:
    """The fit recovers a known slope; durations read like a person would write them."""
    fit = linear_fit([(0, 1), (1, 3), (2, 5)])
    assert fit is not None
    assert fit == pytest.approx((2.0, 1.0))
    assert linear_fit([(1, 1), (1, 2)]) is None
    assert format_duration(12000) == "3 h 20 min"
    assert format_duration(45) == "45 s"
    assert format_duration(3 * 86400) == "3 d"
