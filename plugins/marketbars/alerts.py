"""Alerts the pipeline raises about the data (not task failures): aging gaps, for now.

Every alert is logged, named clearly, at WARNING (warning) or ERROR (critical). Delivery through
notifiers (SNS, e-mail, webhook) plugs in here when they are configured.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger("marketbars.alerts")
LEVELS = {"warning": logging.WARNING, "critical": logging.ERROR}


@dataclass(frozen=True)
class Alert:
    level: str  # warning | critical
    title: str
    lines: Sequence[str]

    def text(self) -> str:
        return "\n".join([f"[{self.level.upper()}] {self.title}", *(f"  {line}" for line in self.lines)])


def emit(alert: Alert) -> None:
    """Raise an alert: logged always (the fallback when no notifier is configured)."""
    log.log(LEVELS[alert.level], "ALERT %s", alert.text())
