"""MassiveFlatFilesHook against a real S3 server on loopback, through the massive_s3 connection."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from marketbars.massive.local_copies import local_path
from marketbars.massive.s3_hook import FlatFileDownloadError, MassiveFlatFilesHook
from sandbox import market
from sandbox.services import S3Server
from tests.helpers import publish

pytestmark = pytest.mark.integration
DAY = dt.date(2024, 3, 5)


@pytest.fixture
def hook(airflow_connections: dict[str, str], s3: S3Server) -> MassiveFlatFilesHook:
    return MassiveFlatFilesHook(bucket=s3.bucket)


def test_stat_reports_the_objects_version_or_none(hook: MassiveFlatFilesHook, s3: S3Server) -> None:
    sample = market.build_file("stocks", "1m", DAY)
    publish(s3, sample)
    remote = hook.stat("stocks", "1m", DAY)
    assert remote is not None
    assert (remote.key, remote.size, remote.session) == (sample.key, len(sample.body), DAY)
    assert hook.url(remote.key) == f"s3://{s3.bucket}/{sample.key}"
    assert remote.etag and '"' not in remote.etag
    assert hook.stat("stocks", "1m", dt.date(2024, 3, 6)) is None


def test_fetch_writes_the_exact_bytes_atomically_and_reuses_them(
    hook: MassiveFlatFilesHook, s3: S3Server, download_dir: Path
) -> None:
    sample = market.build_file("stocks", "1m", DAY)
    publish(s3, sample)
    remote = hook.stat(sample.dataset, sample.timeframe, sample.session)
    path, reused = hook.fetch(remote, download_dir)
    assert (path.read_bytes(), reused, path) == (sample.body, False, local_path(download_dir, remote))
    assert list(path.parent.glob(".*.part")) == []
    again, reused = hook.fetch(remote, download_dir)
    assert (again, reused) == (path, True)


def test_a_local_copy_of_the_wrong_size_is_downloaded_again(
    hook: MassiveFlatFilesHook, s3: S3Server, download_dir: Path
) -> None:
    sample = market.build_file("stocks", "1m", DAY)
    publish(s3, sample)
    remote = hook.stat(sample.dataset, sample.timeframe, sample.session)
    path = local_path(download_dir, remote)
    path.parent.mkdir(parents=True)
    path.write_bytes(sample.body[:100])  # e.g. a copy somebody truncated by hand
    fetched, reused = hook.fetch(remote, download_dir)
    assert (fetched.read_bytes(), reused) == (sample.body, False)


def test_a_replaced_object_gets_a_new_local_copy_and_the_old_one_goes(
    hook: MassiveFlatFilesHook, s3: S3Server, download_dir: Path
) -> None:
    old = market.build_file("stocks", "1m", DAY, pathologies=[])
    new = market.build_file("stocks", "1m", DAY, pathologies=["duplicate_row"])
    publish(s3, old)
    old_path, _ = hook.fetch(hook.stat(old.dataset, old.timeframe, old.session), download_dir)
    publish(s3, new)
    new_remote = hook.stat(new.dataset, new.timeframe, new.session)
    new_path, reused = hook.fetch(new_remote, download_dir)
    assert new_path != old_path and not reused
    assert new_path.read_bytes() == new.body and not old_path.exists()


def test_an_object_replaced_between_stat_and_fetch_fails_without_leaving_a_partial_file(
    hook: MassiveFlatFilesHook, s3: S3Server, download_dir: Path
) -> None:
    old = market.build_file("stocks", "1m", DAY, pathologies=[])
    publish(s3, old)
    stale = hook.stat(old.dataset, old.timeframe, old.session)
    publish(s3, market.build_file("stocks", "1m", DAY, pathologies=["empty_field"]))
    with pytest.raises(FlatFileDownloadError, match="was replaced while it was being fetched"):
        hook.fetch(stale, download_dir)
    assert [p for p in download_dir.rglob("*") if p.is_file()] == []


def test_a_download_cleans_up_what_a_killed_attempt_left_of_the_same_key_and_nothing_else(
    hook: MassiveFlatFilesHook, s3: S3Server, download_dir: Path
) -> None:
    sample = market.build_file("stocks", "1m", DAY)
    publish(s3, sample)
    remote = hook.stat("stocks", "1m", DAY)
    folder = local_path(download_dir, remote).parent
    folder.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid is free: a task killed mid-download on this host
    old = time.time() - 3600
    partials = {
        f".{DAY}.{remote.etag}.csv.gz.{socket.gethostname()}-{dead.pid}-0a1b2c3d.part": None,  # ours, dead
        f".{DAY}.{remote.etag}.csv.gz.{dead.pid}-1a1b2c3d.part": old,  # the old naming, an hour old
        f".{DAY}.oldetag.csv.gz.other-host-77-2a1b2c3d.part": old,  # another host's, an hour old
        f".{DAY}.{remote.etag}.csv.gz.other-host-78-3a1b2c3d.part": None,  # another host's, in progress
        f".{DAY}.{remote.etag}.csv.gz.{socket.gethostname()}-{os.getpid()}-4a1b2c3d.part": None,  # alive
        ".2024-03-06.abc.csv.gz.other-host-79-5a1b2c3d.part": old,  # another key: not this download's
    }
    for name, mtime in partials.items():
        (folder / name).write_bytes(b"x" * 100)
        if mtime is not None:
            os.utime(folder / name, (mtime, mtime))
    hook.fetch(remote, download_dir)
    assert sorted(p.name for p in folder.glob(".*.part")) == sorted(
        [
            f".{DAY}.{remote.etag}.csv.gz.other-host-78-3a1b2c3d.part",
            f".{DAY}.{remote.etag}.csv.gz.{socket.gethostname()}-{os.getpid()}-4a1b2c3d.part",
            ".2024-03-06.abc.csv.gz.other-host-79-5a1b2c3d.part",
        ]
    )
