"""Failure alerting end to end: a task fails for good in dag.test(), and its alert reaches each
channel on a real loopback server (moto's SNS -> SQS, an aiosmtpd SMTP server, an HTTP webhook)
with the exact fields, and no credential anywhere in it."""

from __future__ import annotations

import datetime as dt
import email
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import pytest

from marketbars.alerting.channels import emit
from marketbars.alerting.messages import Alert
from sandbox.services import S3Server, free_port

pytestmark = [pytest.mark.integration, pytest.mark.dagrun]
# Secrets the alert must never carry: the channels' own credentials, and ones inside the error.
AWS_SECRET = "aws-secret-Zq81xK"
WEBHOOK_TOKEN = "webhook-token-Pw55"
WEBHOOK_PATH = "/services/T000/B000/path-secret-Hh77"
DB_PASSWORD = "db-password-Lm42"
API_KEY = "api-key-Rt09"
SECRETS = (AWS_SECRET, WEBHOOK_TOKEN, WEBHOOK_PATH, "path-secret-Hh77", DB_PASSWORD, API_KEY)
RUN = dt.datetime(2026, 1, 12, 20, 15, tzinfo=dt.UTC)


class Webhook:
    """A loopback HTTP server that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append({"path": self.path, "headers": dict(self.headers), "body": body.decode()})
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}{WEBHOOK_PATH}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Mailbox:
    """An aiosmtpd SMTP server on loopback that keeps the messages it receives."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[email.message.Message] = []
        messages = self.messages

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                messages.append(email.message_from_bytes(envelope.content))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()


@pytest.fixture
def channels(s3_endpoint: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    import boto3

    sns = boto3.client(
        "sns", endpoint_url=s3_endpoint.endpoint_url, region_name="us-east-1",
        aws_access_key_id="alerts", aws_secret_access_key=AWS_SECRET,
    )  # fmt: skip
    sqs = boto3.client(
        "sqs", endpoint_url=s3_endpoint.endpoint_url, region_name="us-east-1",
        aws_access_key_id="alerts", aws_secret_access_key=AWS_SECRET,
    )  # fmt: skip
    topic = sns.create_topic(Name="market-data-alerts")["TopicArn"]
    queue = sqs.create_queue(QueueName="alerts-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    webhook, mailbox = Webhook(), Mailbox()
    env = {
        "AIRFLOW_CONN_AWS_ALERTS": json.dumps({
            "conn_type": "aws", "login": "alerts", "password": AWS_SECRET,
            "extra": {"endpoint_url": s3_endpoint.endpoint_url, "region_name": "us-east-1"},
        }),
        "AIRFLOW_CONN_SMTP_ALERTS": json.dumps({
            "conn_type": "smtp", "host": "127.0.0.1", "port": mailbox.port,
            "extra": {"disable_ssl": True, "disable_tls": True, "timeout": 10, "retry_limit": 1},
        }),
        "AIRFLOW_CONN_ALERTS_WEBHOOK": json.dumps(
            {"conn_type": "http", "host": webhook.url, "password": WEBHOOK_TOKEN}
        ),
        "AIRFLOW_VAR_ALERTS_SNS_TOPIC_ARN": topic,
        "AIRFLOW_VAR_ALERTS_AWS_CONN_ID": "aws_alerts",
        "AIRFLOW_VAR_ALERTS_EMAIL_TO": "oncall@example.com, data@example.com",
        "AIRFLOW_VAR_ALERTS_EMAIL_FROM": "airflow@example.com",
        "AIRFLOW_VAR_ALERTS_SMTP_CONN_ID": "smtp_alerts",
    }  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield {"sqs": sqs, "queue": queue, "webhook": webhook, "mailbox": mailbox}
    webhook.server.shutdown()
    mailbox.controller.stop()


PROBE_DAG = f"""
import datetime as dt

from airflow.sdk import DAG, task

from marketbars.pipelines.common.dag_defaults import DEFAULT_ARGS

from marketbars.alerting.channels import DagRunFailureNotifier

with DAG(
    dag_id="alerting_probe",
    schedule=None,
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    default_args={{**DEFAULT_ARGS, "retries": 0}},
    max_consecutive_failed_dag_runs=3,
    on_failure_callback=DagRunFailureNotifier(pause_after=3),
) as dag:

    @task(map_index_template="{{{{ task.op_kwargs['symbol'] }}}}")
    def load(symbol: str) -> None:
        raise RuntimeError(
            f"{{symbol}}: cannot reach postgresql://market:{DB_PASSWORD}@db.internal:5432/market"
            " (api_key={API_KEY})"
        )

    load.expand(symbol=["AAPL"])
"""


@pytest.fixture
def failing_dag(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A DAG with the project's default args whose mapped task fails for AAPL, its error text
    carrying credentials the way a driver's error can; in a DAGs folder of its own, which
    dag.test() syncs to the metadata database."""
    from airflow.dag_processing.dagbag import DagBag

    (tmp_path / "alerting_probe.py").write_text(PROBE_DAG)
    bundle = {"name": "alerting-probe", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
              "kwargs": {"path": str(tmp_path)}}  # fmt: skip
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps([bundle]))
    return DagBag(dag_folder=str(tmp_path)).dags["alerting_probe"]


def assert_alert_fields(fields: dict[str, Any], run_id: str) -> None:
    assert fields["dag_id"] == "alerting_probe" and fields["task_id"] == "load"
    assert fields["map_index"] == 0 and fields["map_name"] == "AAPL"
    assert fields["try_number"] == 1 and fields["run_id"] == run_id
    assert fields["logical_date"] == RUN.isoformat()
    assert fields["error"].startswith("RuntimeError: AAPL: cannot reach postgresql://***:***@db.internal")
    assert "api_key=***" in fields["error"]
    assert fields["log_url"].endswith(
        f"/dags/alerting_probe/runs/{quote(run_id)}/tasks/load/mapped/0?try_number=1"
    )
    assert fields["level"] == "error" and fields["title"] == "Task failed: alerting_probe.load [AAPL]"


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} leaked"


def test_a_failed_task_alerts_every_channel_with_the_fields_and_no_secret(
    airflow_metadata_db: None, channels: dict[str, Any], failing_dag: Any
) -> None:
    run = failing_dag.test(logical_date=RUN)

    assert run.state == "failed"
    # The task's alert; the DAG run's own failure alert follows it (see the next test).
    [post] = [r for r in channels["webhook"].requests if '"task_id"' in r["body"]]
    assert post["path"] == WEBHOOK_PATH and post["headers"]["Authorization"] == f"Bearer {WEBHOOK_TOKEN}"
    body = json.loads(post["body"])
    assert_alert_fields(body, run.run_id)
    assert body["text"].startswith("[ERROR] Task failed: alerting_probe.load [AAPL]")

    messages = channels["sqs"].receive_message(QueueUrl=channels["queue"], MaxNumberOfMessages=10)["Messages"]
    [envelope] = [
        e for e in map(json.loads, (m["Body"] for m in messages)) if e["Subject"].startswith("Task")
    ]
    assert envelope["Subject"] == "Task failed: alerting_probe.load [AAPL]"
    assert_alert_fields(json.loads(envelope["Message"]), run.run_id)

    [mail] = [m for m in channels["mailbox"].messages if m["Subject"].startswith("Task failed")]
    assert mail["Subject"] == "Task failed: alerting_probe.load [AAPL]"
    assert mail["From"] == "airflow@example.com" and "oncall@example.com" in mail["To"]
    html = next(
        part.get_payload(decode=True).decode()
        for part in mail.walk()
        if part.get_content_type() == "text/html"
    )
    for expected in (
        "alerting_probe.load [AAPL]",
        f"run {run.run_id}",
        "try 1 of 1",
        "RuntimeError",
        "log: http",
    ):
        assert expected in html
    assert_no_secret(post["body"], json.dumps(envelope), mail.as_string())


def test_the_third_failed_run_in_a_row_says_the_dag_is_paused(
    airflow_metadata_db: None, channels: dict[str, Any], failing_dag: Any
) -> None:
    for day in range(3):
        assert failing_dag.test(logical_date=RUN + dt.timedelta(days=day)).state == "failed"

    dag_alerts = [json.loads(r["body"]) for r in channels["webhook"].requests]
    dag_alerts = [a for a in dag_alerts if "failed_in_a_row" in a]
    assert [(a["failed_in_a_row"], a["paused"], a["level"]) for a in dag_alerts] == [
        (1, False, "error"), (2, False, "error"), (3, True, "critical"),
    ]  # fmt: skip
    assert dag_alerts[-1]["title"] == "DAG paused after 3 failed runs: alerting_probe"
    assert "the scheduler has paused alerting_probe" in dag_alerts[-1]["text"]


def test_without_a_channel_the_alert_is_a_clear_log_line_and_nothing_breaks(
    airflow_metadata_db: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    failing_dag: Any,
) -> None:
    for name in (
        "AIRFLOW_VAR_ALERTS_SNS_TOPIC_ARN",
        "AIRFLOW_VAR_ALERTS_EMAIL_TO",
        "AIRFLOW_CONN_ALERTS_WEBHOOK",
    ):
        monkeypatch.delenv(name, raising=False)
    with caplog.at_level(logging.INFO):
        run = failing_dag.test(logical_date=RUN)
    assert run.state == "failed"
    text = caplog.text
    assert "ALERT [ERROR] Task failed: alerting_probe.load [AAPL]" in text
    assert "no alert channel is configured" in text
    assert_no_secret(text.split("ALERT", 1)[1].split("no alert channel", 1)[0])


def test_a_failing_channel_does_not_stop_the_others(
    channels: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_ALERTS_SMTP_CONN_ID", "smtp_missing")
    alert = Alert("warning", "3 gap(s) open for more than 1 trading sessions", ["AAPL 1m 2026-01-09"], {})
    assert emit(alert) == ["sns", "webhook"]
    assert json.loads(channels["webhook"].requests[0]["body"])["title"] == alert.title


def test_the_deadline_callback_alerts_from_the_triggerer(channels: dict[str, Any]) -> None:
    import asyncio

    from marketbars.alerting.channels import deadline_missed

    asyncio.run(deadline_missed(context=None, dag_id="watchlist_daily_backfill", deadline="3:00:00"))

    [post] = channels["webhook"].requests
    body = json.loads(post["body"])
    assert (body["level"], body["title"], body["dag_id"]) == (
        "warning", "Deadline missed: watchlist_daily_backfill", "watchlist_daily_backfill"
    )  # fmt: skip
    assert "had not finished 3:00:00 after it was queued" in body["text"]
