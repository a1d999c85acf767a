"""Alerts that alert: rules on pool health, proven delivery, spool, heartbeat and drills.

The usual entry is ``poolwatch.start()``; these are the parts, for wiring by hand and testing.
"""

from __future__ import annotations

from ._delivery import Dispatcher
from ._drill import (
    DrillResult,
    InduceReport,
    demo_alert,
    drill_channels,
    drill_notification,
    induce,
)
from ._engine import PROCESS_GROUP, Engine, Transition
from ._heartbeat import Heartbeat
from ._ledger import Attempt, ChannelHealth, Ledger, Spool
from ._model import SEVERITIES, Alert, Notification, format_duration
from ._notifiers import (
    Channel,
    DeliveryError,
    LogChannel,
    Secret,
    SmtpChannel,
    WebhookChannel,
    redact_url,
)
from ._rules import ALERT_NAMES, INHIBITS, Finding, Rules, linear_fit
from ._ruletest import RuleTest, expand_series

__all__ = [
    "ALERT_NAMES",
    "INHIBITS",
    "PROCESS_GROUP",
    "SEVERITIES",
    "Alert",
    "Attempt",
    "Channel",
    "ChannelHealth",
    "DeliveryError",
    "Dispatcher",
    "DrillResult",
    "Engine",
    "Finding",
    "Heartbeat",
    "InduceReport",
    "Ledger",
    "LogChannel",
    "Notification",
    "RuleTest",
    "Rules",
    "Secret",
    "SmtpChannel",
    "Spool",
    "Transition",
    "WebhookChannel",
    "demo_alert",
    "drill_channels",
    "expand_series",
    "format_duration",
    "induce",
    "linear_fit",
    "redact_url",
    "drill_notification",
]


def __getattr__(name: str) -> object:
    # SmtpSink needs aiosmtpd (the `alerts` extra): imported only when asked for.
    if name in ("SmtpSink", "free_port"):
        from . import _smtpsink

        return getattr(_smtpsink, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
