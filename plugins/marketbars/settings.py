"""Every Airflow Variable the project reads: its name, default and meaning, defined once.

Tasks read a setting with ``get()`` when they run; operator arguments take its Jinja ``template``,
rendered when the task runs (never when a DAG file is parsed). The README's settings table and
``airflow_settings.yaml`` are checked against ``REGISTRY`` by the tests.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from marketbars.massive.flatfiles import DEFAULT_BUCKET

T = TypeVar("T", str, int, float)

# Where flat files are cached between the download and load tasks. On several workers, point
# ``massive_download_dir`` at a shared volume (a load task re-fetches a file it does not have).
DEFAULT_DOWNLOAD_DIR = str(Path(tempfile.gettempdir()) / "massive-flatfiles")


def _airflow_home(*parts: str) -> Callable[[], str]:
    def default() -> str:
        return str(Path(os.environ.get("AIRFLOW_HOME", tempfile.gettempdir())).joinpath(*parts))

    return default


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One Variable: ``kind`` converts its text; ``default`` applies when it is not set (a callable
    is evaluated then, e.g. a folder under ``$AIRFLOW_HOME``)."""

    name: str
    kind: type[T]
    default: T | Callable[[], T]
    description: str
    documented_default: str = ""  # the README's wording of a computed default

    def default_value(self) -> T:
        return self.default() if callable(self.default) else self.default

    def get(self) -> T:
        """The Variable's value, or the default when it is unset or empty."""
        from airflow.sdk import Variable

        value = Variable.get(self.name, default=None)
        if value is None or str(value).strip() == "":
            return self.default_value()
        return self.kind(str(value).strip())

    def get_or_default(self) -> T:
        """``get()``, or the default when no Variable backend is reachable (an alert raised outside a
        task must still go out)."""
        try:
            return self.get()
        except Exception:
            return self.default_value()

    @property
    def template(self) -> str:
        """Jinja that renders the Variable, or the default, when a task runs."""
        return f"{{{{ var.value.get('{self.name}', '{self.default_value()}') }}}}"

    @property
    def readme_default(self) -> str:
        """The default as the README's settings table writes it."""
        if self.documented_default:
            return self.documented_default
        value = self.default_value()
        if value == "":
            return "empty"
        return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


BUCKET = Setting("massive_flatfiles_bucket", str, DEFAULT_BUCKET, "the vendor's flat-files bucket")
DOWNLOAD_DIR = Setting(
    "massive_download_dir",
    str,
    DEFAULT_DOWNLOAD_DIR,
    "local cache of downloaded flat files; on several workers a shared volume (or a load task re-fetches)",
    "`<tmp>/massive-flatfiles`",
)
REST_REQUESTS_PER_MINUTE = Setting(
    "massive_api_requests_per_minute", float, 5.0, "the API plan's limit for every worker together; 0 = none"
)
INITIAL_HISTORY_SESSIONS = Setting(
    "watchlist_initial_history_sessions", int, 90, "sessions of history a symbol new to the watchlist gets"
)
REFERENCE_RECENT_DAYS = Setting(
    "reference_recent_days",
    int,
    30,
    "calendar days of corporate actions every daily run re-fetches (reference data changes after the fact)",
)
TICKER_EVENTS_MAX_AGE_DAYS = Setting(
    "reference_ticker_events_max_age_days",
    int,
    7,
    "a watchlist ticker's rename check is repeated once its last one is this many days old",
)
GAPS_COVERAGE = Setting(
    "gaps_coverage_threshold",
    float,
    0.95,
    "a liquid symbol's session is partial below this share of its minutes",
)
GAPS_MAX_ATTEMPTS = Setting("gaps_max_attempts", int, 5, "retries before an open gap becomes unfillable")
GAPS_BACKOFF_HOURS = Setting(
    "gaps_backoff_hours", float, 12.0, "the wait after a gap's first failed retry, doubling (at most 7 days)"
)
QUARANTINE_RETENTION_DAYS = Setting(
    "cleanup_quarantine_retention_days", int, 365, "weekly_cleanup prunes older quarantine rows; 0 = keep"
)
LEDGER_RETENTION_DAYS = Setting(
    "cleanup_ledger_retention_days",
    int,
    730,
    "weekly_cleanup prunes older ledger rows and closed gaps; 0 = keep",
)
BACKTEST_RETENTION_DAYS = Setting(
    "cleanup_backtest_retention_days", int, 0, "weekly_cleanup removes older backtest runs; 0 = keep"
)
GAP_REPORTS_DIR = Setting(
    "market_reports_dir",
    str,
    _airflow_home("reports", "gaps"),
    "the gap reports' folder",
    "`$AIRFLOW_HOME/reports/gaps`",
)
BACKTEST_REPORTS_DIR = Setting(
    "market_backtest_reports_dir",
    str,
    _airflow_home("reports", "backtests"),
    "the backtest reports' folder",
    "`$AIRFLOW_HOME/reports/backtests`",
)
REPORTS_S3_URI = Setting(
    "market_reports_s3_uri",
    str,
    "",
    "where reports are copied, e.g. `s3://bucket/prefix`; empty = local only",
)
REPORTS_AWS_CONN_ID = Setting(
    "market_reports_aws_conn_id", str, "aws_default", "the connection reports are copied to S3 with"
)
ALERTS_SNS_TOPIC_ARN = Setting("alerts_sns_topic_arn", str, "", "the SNS topic alerts go to; empty = off")
ALERTS_AWS_CONN_ID = Setting(
    "alerts_aws_conn_id", str, "aws_default", "the connection SNS alerts are sent with"
)
ALERTS_EMAIL_TO = Setting("alerts_email_to", str, "", "comma-separated alert recipients; empty = off")
ALERTS_EMAIL_FROM = Setting(
    "alerts_email_from", str, "market-data-airflow@localhost", "the sender of alert e-mails"
)
ALERTS_SMTP_CONN_ID = Setting(
    "alerts_smtp_conn_id", str, "smtp_default", "the connection alert e-mails are sent with"
)

REGISTRY: tuple[Setting[str] | Setting[int] | Setting[float], ...] = (
    BUCKET,
    DOWNLOAD_DIR,
    REST_REQUESTS_PER_MINUTE,
    INITIAL_HISTORY_SESSIONS,
    REFERENCE_RECENT_DAYS,
    TICKER_EVENTS_MAX_AGE_DAYS,
    GAPS_COVERAGE,
    GAPS_MAX_ATTEMPTS,
    GAPS_BACKOFF_HOURS,
    QUARANTINE_RETENTION_DAYS,
    LEDGER_RETENTION_DAYS,
    BACKTEST_RETENTION_DAYS,
    GAP_REPORTS_DIR,
    BACKTEST_REPORTS_DIR,
    REPORTS_S3_URI,
    REPORTS_AWS_CONN_ID,
    ALERTS_SNS_TOPIC_ARN,
    ALERTS_AWS_CONN_ID,
    ALERTS_EMAIL_TO,
    ALERTS_EMAIL_FROM,
    ALERTS_SMTP_CONN_ID,
)
