"""The download and load operators end to end: moto S3 -> local disk -> PostgreSQL, via their connections."""

from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException

from marketbars.massive import s3_hook
from marketbars.operators.flatfile_download import FlatFileMissingError
from sandbox import market
from sandbox.services import S3Server, free_port
from tests.helpers import download, publish

pytestmark = pytest.mark.integration
DAY = dt.date(2024, 11, 29)  # an early close


def test_download_skips_non_sessions_even_when_the_bucket_has_a_file(
    airflow_connections: dict[str, str], s3: S3Server, download_dir: Path
) -> None:
    thanksgiving = dt.date(2024, 11, 28)
    publish(s3, market.build_file("indices", "1m", thanksgiving), market.build_file("indices", "1m", DAY))
    files = download(s3, download_dir, ["2024-11-28", "2024-11-29", "2024-11-30"], dataset="indices")
    assert [(f["session"], f["status"]) for f in files] == [
        ("2024-11-28", "non_session"), ("2024-11-29", "downloaded"), ("2024-11-30", "non_session"),
    ]  # fmt: skip
    assert Path(files[1]["path"]).read_bytes() == market.build_file("indices", "1m", DAY).body
    assert [f["status"] for f in download(s3, download_dir, ["2024-11-29"], dataset="indices")] == ["cached"]


def test_a_missing_trading_session_file_fails_naming_the_key_after_fetching_the_rest(
    airflow_connections: dict[str, str], s3: S3Server, download_dir: Path
) -> None:
    publish(s3, market.build_file("stocks", "1m", DAY))
    with pytest.raises(FlatFileMissingError) as error:
        download(s3, download_dir, ["2024-11-27", "2024-11-29"])
    assert f"s3://{s3.bucket}/us_stocks_sip/minute_aggs_v1/2024/11/2024-11-27.csv.gz" in str(error.value)
    assert "2024-11-29" not in str(error.value)
    assert len(list(download_dir.rglob("2024-11-29.*.csv.gz"))) == 1  # the retry will reuse it


class RefusingEndpoint:
    """An HTTP server on loopback that answers every S3 request with one status (and an S3 error
    body), as a wrong endpoint or bad credentials do."""

    def __init__(self, status: int, code: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def _refuse(self) -> None:
                body = f"<Error><Code>{code}</Code><Message>refused</Message></Error>".encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_PUT = _refuse

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.mark.parametrize(
    ("status", "code"), [(501, "NotImplemented"), (403, "InvalidAccessKeyId"), (403, "SignatureDoesNotMatch")]
)
def test_a_refusal_no_retry_can_change_fails_at_once(
    airflow_connections: dict[str, str],
    s3: S3Server,
    download_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    code: str,
) -> None:
    endpoint = RefusingEndpoint(status, code)
    refusing = S3Server(endpoint_url=endpoint.url, bucket=s3.bucket, _server=None)
    monkeypatch.setenv("AIRFLOW_CONN_MASSIVE_S3", json.dumps(refusing.airflow_connection()))
    with pytest.raises(AirflowFailException, match=rf"HTTP {status}.*retrying will not help"):
        download(s3, download_dir, [DAY.isoformat()])


def test_a_refusal_that_may_heal_is_left_to_the_retries(
    airflow_connections: dict[str, str], s3: S3Server, download_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = RefusingEndpoint(503, "SlowDown")
    refusing = S3Server(endpoint_url=endpoint.url, bucket=s3.bucket, _server=None)
    monkeypatch.setenv("AIRFLOW_CONN_MASSIVE_S3", json.dumps(refusing.airflow_connection()))
    monkeypatch.setitem(s3_hook.BOTO_CONFIG, "retries", {"mode": "standard", "max_attempts": 1})
    with pytest.raises(Exception) as failed:
        download(s3, download_dir, [DAY.isoformat()])
    assert not isinstance(failed.value, AirflowFailException)
