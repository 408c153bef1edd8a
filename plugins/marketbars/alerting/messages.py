"""What an alert says: built from Airflow's callback context or from the data, scrubbed of credentials.

An alert names what failed (DAG, task, the mapped instance's rendered name, try, run, logical
date), why (the exception's message, scrubbed of credentials) and where to look (the task log's
link). ``marketbars.alerting.channels`` logs and delivers it. Light imports only: DAG files import
this package for their default args.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

LEVELS = {"warning": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}
MAX_ERROR_CHARS = 2000
# Credentials that can end up in an exception's text: URL user info, key=value secrets, bearer tokens.
_SECRET_PATTERNS = (
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@"), r"\1***:***@"),
    (
        re.compile(
            r"(?i)\b(password|passwd|secret|token|api[_-]?key|apikey|aws_secret_access_key)(\s*[=:]\s*)[^\s,;&'\"]+"
        ),
        r"\1\2***",
    ),
    (re.compile(r"(?i)\b(bearer)\s+[a-z0-9._~+/-]+=*"), r"\1 ***"),
)


@dataclass(frozen=True)
class Alert:
    level: str  # warning | error | critical
    title: str
    lines: Sequence[str]
    fields: Mapping[str, Any] = field(default_factory=dict)  # machine-readable, for webhooks

    def text(self) -> str:
        return "\n".join([f"[{self.level.upper()}] {self.title}", *(f"  {line}" for line in self.lines)])

    def payload(self) -> dict[str, Any]:
        """A Slack-compatible JSON body (``text``) that also carries the fields for machines."""
        return {"text": self.text(), "level": self.level, "title": self.title, **self.fields}


def scrub(text: str) -> str:
    """The text with credentials masked: Airflow's masker (every connection password and secret
    Variable this process has read) and, for what it cannot know, the usual secret shapes."""
    try:
        from airflow.sdk._shared.secrets_masker import redact

        text = str(redact(text))
    except ImportError:  # pragma: no cover - outside Airflow
        pass
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def task_failure(context: Mapping[str, Any]) -> Alert:
    """The alert for a task that failed for good (its retries are exhausted)."""
    ti = context["ti"]
    exception = context.get("exception")
    error = scrub(
        f"{type(exception).__name__}: {exception}" if exception is not None else "no exception recorded"
    )
    if len(error) > MAX_ERROR_CHARS:
        error = error[:MAX_ERROR_CHARS] + " ..."
    map_index = getattr(ti, "map_index", -1)
    map_name = getattr(ti, "rendered_map_index", None) or (
        str(map_index) if map_index is not None and map_index >= 0 else None
    )
    logical = context.get("logical_date")
    fields = {
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "map_index": map_index,
        "map_name": map_name,
        "try_number": ti.try_number,
        "max_tries": getattr(ti, "max_tries", None),
        "run_id": ti.run_id,
        "logical_date": logical.isoformat() if logical is not None else None,
        "error": error,
        "log_url": _log_url(ti),
    }
    where = f"{ti.dag_id}.{ti.task_id}" + (f" [{map_name}]" if map_name else "")
    return Alert(
        "error",
        f"Task failed: {where}",
        [
            f"try {ti.try_number}"
            + (f" of {fields['max_tries'] + 1}" if fields["max_tries"] is not None else ""),
            f"run {ti.run_id}" + (f", logical date {fields['logical_date']}" if logical is not None else ""),
            f"error: {error}",
            f"log: {fields['log_url']}",
        ],
        fields,
    )


def dag_run_failure(
    dag_id: str, run_id: str | None, reason: str | None, failed_in_a_row: int | None, pause_after: int
) -> Alert:
    """The alert for a DAG run that failed; it says so when the failures in a row pause the DAG."""
    paused = failed_in_a_row is not None and failed_in_a_row >= pause_after
    streak = (
        f"{failed_in_a_row} failed run(s) in a row" if failed_in_a_row else "failed runs in a row unknown"
    )
    lines = [f"run {run_id}: {reason or 'failed'}", streak]
    if paused:
        lines.append(
            f"the scheduler has paused {dag_id} (max_consecutive_failed_dag_runs = {pause_after}):"
            " fix the cause, then unpause it"
        )
    title = (
        f"DAG paused after {failed_in_a_row} failed runs: {dag_id}" if paused else f"DAG run failed: {dag_id}"
    )
    fields = {"dag_id": dag_id, "run_id": run_id, "reason": reason, "failed_in_a_row": failed_in_a_row,
              "paused": paused}  # fmt: skip
    return Alert("critical" if paused else "error", title, lines, fields)


def deadline_missed(dag_id: str, deadline: str, run_id: str | None = None) -> Alert:
    """The alert for a run that has not finished by its deadline."""
    return Alert(
        "warning",
        f"Deadline missed: {dag_id}",
        [f"run {run_id or '(unknown)'} had not finished {deadline} after it was queued"],
        {"dag_id": dag_id, "run_id": run_id, "deadline": deadline},
    )


def _log_url(ti: Any) -> str | None:
    try:
        return str(ti.log_url)
    except Exception:  # no API base URL configured: the alert still goes out
        return None
