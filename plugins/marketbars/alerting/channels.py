"""Alert channels: SNS (the amazon provider's notifier), e-mail (the SMTP provider's) and a JSON
webhook (Slack-compatible), chosen by configuration when an alert is raised, not when a DAG is
parsed. Every DAG's tasks carry ``FailureAlertNotifier`` as their ``on_failure_callback``; ``emit``
raises any alert (logged always, then delivered).

Configuration (Variables, and connections for the secrets):

* SNS: ``alerts_sns_topic_arn`` (empty: off), through the ``alerts_aws_conn_id`` connection
  (default ``aws_default``);
* e-mail: ``alerts_email_to`` (comma-separated; empty: off), ``alerts_email_from``, through the
  ``alerts_smtp_conn_id`` connection (default ``smtp_default``);
* webhook: the ``alerts_webhook`` connection (an ``http`` connection whose host is the URL; a
  password, if any, is sent as a bearer token); absent: off.

Nothing configured: one log line says so, and the alert is in the log. A credential never goes
into an alert (``messages.scrub``), and the webhook URL, a secret itself for Slack, is masked.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

from airflow.sdk import BaseNotifier, Context

from marketbars import settings
from marketbars.alerting import messages
from marketbars.alerting.messages import LEVELS, Alert

log = logging.getLogger(__name__)
alert_log = logging.getLogger("marketbars.alerts")  # one logger for every alert, whatever raised it
WEBHOOK_CONN_ID = "alerts_webhook"
WEBHOOK_TIMEOUT_S = 10


class WebhookNotifier(BaseNotifier):
    """POST an alert as JSON to the URL of an ``http`` connection: ``{"text": ..., <fields>}``.

    Slack incoming webhooks read ``text``; other receivers get every field (DAG, task, map name,
    try, run, logical date, error, log link). The connection's password, if set, is sent as
    ``Authorization: Bearer``. Failures name the host only: the URL's path may be the secret.
    """

    template_fields: Sequence[str] = ("http_conn_id",)

    def __init__(
        self, *, payload: Mapping[str, Any], http_conn_id: str = WEBHOOK_CONN_ID, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.payload = dict(payload)
        self.http_conn_id = http_conn_id

    def notify(self, context: Any) -> None:
        import requests
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(self.http_conn_id)
        url = _webhook_url(conn)
        _mask(url)
        headers = {"Content-Type": "application/json"}
        if conn.password:
            headers["Authorization"] = f"Bearer {conn.password}"
        host = urlsplit(url).netloc
        try:
            response = requests.post(
                url, data=json.dumps(self.payload, default=str), headers=headers, timeout=WEBHOOK_TIMEOUT_S
            )
        except requests.RequestException as exc:
            raise RuntimeError(f"webhook {host}: {type(exc).__name__}") from None
        if response.status_code >= 300:
            raise RuntimeError(f"webhook {host} answered HTTP {response.status_code}")


class FailureAlertNotifier(BaseNotifier):
    """``on_failure_callback`` of every task: builds the failure alert from the context and sends
    it through the configured channels (see the module's docstring)."""

    def notify(self, context: Any) -> None:
        emit(messages.task_failure(context), context)


class DagRunFailureNotifier:
    """DAG-level ``on_failure_callback`` of the scheduled DAGs: a run failed; after
    ``pause_after`` failures in a row (the DAG's ``max_consecutive_failed_dag_runs``) the scheduler
    pauses the DAG, and the alert says so.

    A plain callable, not a ``BaseNotifier``: it renders no template, and ``dag.test()`` hands DAG
    callbacks a serialized DAG that a notifier's template rendering cannot use."""

    def __init__(self, *, pause_after: int) -> None:
        self.pause_after = pause_after

    def __call__(self, context: Any) -> None:
        dag = context.get("dag")
        dag_run = context.get("dag_run")
        alert = messages.dag_run_failure(
            dag_id=str(getattr(dag, "dag_id", None) or getattr(dag_run, "dag_id", "?")),
            run_id=context.get("run_id") or getattr(dag_run, "run_id", None),
            reason=context.get("reason"),
            failed_in_a_row=_failed_in_a_row(dag_run, self.pause_after),
            pause_after=self.pause_after,
        )
        emit(alert, context)


def _failed_in_a_row(dag_run: Any, limit: int) -> int | None:
    """This failed run and the failed runs just before it, counted up to ``limit`` the way the
    scheduler counts before pausing (the latest runs by run_after); None when Airflow cannot tell.

    In the DAG processor the callback has no database: it asks through the Task SDK's channel
    (previous runs by logical date). Where the metadata database is at hand (``dag.test()``), it
    reads it as the scheduler does."""
    if dag_run is None:
        return None
    try:
        from airflow.sdk.execution_time import task_runner

        comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
        if comms is not None and getattr(dag_run, "logical_date", None) is not None:
            from airflow.sdk.execution_time.comms import GetPreviousDagRun

            count, logical = 1, dag_run.logical_date
            while count < limit:
                previous = comms.send(GetPreviousDagRun(dag_id=dag_run.dag_id, logical_date=logical)).dag_run
                if previous is None or not _is_failed(previous.state):
                    break
                count, logical = count + 1, previous.logical_date
            return count
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:  # this run is failed (its state may not be committed yet)
            states = session.scalars(
                select(DagRun.state)
                .where(DagRun.dag_id == dag_run.dag_id, DagRun.run_id != dag_run.run_id)
                .order_by(DagRun.run_after.desc(), DagRun.id.desc())
                .limit(limit - 1)
            ).all()
        count = 1
        for state in states:
            if not _is_failed(state):
                break
            count += 1
        return count
    except Exception as exc:  # the alert goes out regardless
        log.warning("could not count the failed runs before %s: %s", getattr(dag_run, "run_id", "?"), exc)
        return None


def _is_failed(state: Any) -> bool:
    return str(getattr(state, "value", state)) == "failed"  # an enum or its string


def _webhook_url(conn: Any) -> str:
    host = (conn.host or "").strip()
    if not host:
        raise RuntimeError(f"connection {conn.conn_id!r} has no host (the webhook URL)")
    if "://" not in host:
        host = f"{conn.schema or 'https'}://{host}"
    if conn.port:
        scheme, rest = host.split("://", 1)
        netloc, _, path = rest.partition("/")
        host = f"{scheme}://{netloc}:{conn.port}/{path}"
    return host


def _mask(secret: str) -> None:
    try:
        from airflow.sdk.log import mask_secret

        mask_secret(secret)
    except ImportError:  # pragma: no cover
        pass


def _has_connection(conn_id: str) -> bool:
    from airflow.sdk import BaseHook

    try:
        BaseHook.get_connection(conn_id)
    except Exception:
        return False
    return True


def configured_channels() -> dict[str, Any]:
    """Which channels are on, and their settings (no secrets: those stay in the connections)."""
    channels: dict[str, Any] = {}
    if topic := settings.ALERTS_SNS_TOPIC_ARN.get_or_default():
        channels["sns"] = {"target_arn": topic, "aws_conn_id": settings.ALERTS_AWS_CONN_ID.get_or_default()}
    if to := settings.ALERTS_EMAIL_TO.get_or_default():
        channels["email"] = {
            "to": [address.strip() for address in to.split(",") if address.strip()],
            "from_email": settings.ALERTS_EMAIL_FROM.get_or_default(),
            "smtp_conn_id": settings.ALERTS_SMTP_CONN_ID.get_or_default(),
        }
    if _has_connection(WEBHOOK_CONN_ID):
        channels["webhook"] = {"http_conn_id": WEBHOOK_CONN_ID}
    return channels


def deliver(alert: Alert, context: Mapping[str, Any]) -> list[str]:
    """Send an alert through every configured channel; the channels it reached."""
    from airflow.providers.amazon.aws.notifications.sns import SnsNotifier
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    channels = configured_channels()
    if not channels:
        log.warning(
            "no alert channel is configured (Variables alerts_sns_topic_arn, alerts_email_to, or the "
            "%s connection): the alert above is only in this log",
            WEBHOOK_CONN_ID,
        )
        return []
    subject = alert.title[:100]  # SNS subjects are limited to 100 characters
    notifiers: dict[str, BaseNotifier] = {}
    if "sns" in channels:
        notifiers["sns"] = SnsNotifier(
            aws_conn_id=channels["sns"]["aws_conn_id"],
            target_arn=channels["sns"]["target_arn"],
            message=json.dumps(alert.payload(), default=str),
            subject=subject,
        )
    if "email" in channels:
        notifiers["email"] = SmtpNotifier(
            to=channels["email"]["to"],
            from_email=channels["email"]["from_email"],
            subject=subject,
            html_content=_html(alert),
            smtp_conn_id=channels["email"]["smtp_conn_id"],
        )
    if "webhook" in channels:
        notifiers["webhook"] = WebhookNotifier(payload=alert.payload(), **channels["webhook"])
    reached = []
    for name, notifier in notifiers.items():
        try:  # notify(), not __call__: the alert's text must not go through Jinja
            notifier.notify(cast("Context", dict(context)))
        except Exception as exc:
            log.error("alert channel %s failed: %s", name, messages.scrub(str(exc)))
            continue
        reached.append(name)
    log.info("alert sent to %s", ", ".join(reached) or "no channel (every one failed)")
    return reached


def _html(alert: Alert) -> str:
    from html import escape

    rows = "".join(f"<li>{escape(line)}</li>" for line in alert.lines)
    return f"<p><b>{escape(alert.level.upper())}</b> {escape(alert.title)}</p><ul>{rows}</ul>"


async def deadline_missed(context: Any = None, **kwargs: Any) -> None:
    """Deadline Alert callback (runs in the triggerer): the run has not finished in time."""
    import asyncio

    dag_run = (context or {}).get("dag_run") if isinstance(context, Mapping) else None
    alert = messages.deadline_missed(
        dag_id=str(kwargs.get("dag_id") or getattr(dag_run, "dag_id", "?")),
        deadline=str(kwargs.get("deadline", "the configured time")),
        run_id=getattr(dag_run, "run_id", None),
    )
    await asyncio.to_thread(emit, alert, {})


def emit(alert: Alert, context: Mapping[str, Any] | None = None) -> list[str]:
    """Raise an alert: logged always, then delivered through every configured channel; returns the
    channels it went to. A channel that fails is logged and does not stop the others."""
    alert_log.log(LEVELS[alert.level], "ALERT %s", alert.text())
    return deliver(alert, context or {})
