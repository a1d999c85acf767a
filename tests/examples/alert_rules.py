from poolwatch.alerts import Rules, RuleTest

t = RuleTest(Rules(warning_for=20), interval=10)
t.pool("urllib3 http://api:80", max=10, leased="5x2 8x10")  # promtool series notation
t.assert_alerts(at=30, pending=["PoolUtilisationHigh"])
t.assert_alerts(at=50, firing=["PoolUtilisationHigh"])
t.assert_alerts(at=60, firing=["PoolUtilisationHigh", "SuspectedLeak"])  # leased > 1 min
