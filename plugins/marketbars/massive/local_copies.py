"""The local cache of downloaded flat files: where a version is kept, how a download in progress is
named, and which partial downloads were abandoned. The download (``s3_hook``) and the weekly
cleanup both go by these names, and touch nothing else in the folder."""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from pathlib import Path

from marketbars.market.provenance import FileVersion

# "<session>.<etag>.csv.gz": one version of one session's file.
CACHED_NAME = re.compile(r"\d{4}-\d{2}-\d{2}\.[A-Za-z0-9-]+\.csv\.gz")
# ".<cached name>.<host>-<pid>-<hex>.part": a download in progress (older ones had no host).
PARTIAL_NAME = re.compile(
    r"\.(?P<cached>\d{4}-\d{2}-\d{2}\.[A-Za-z0-9-]+\.csv\.gz)\.(?:(?P<host>[A-Za-z0-9.-]+)-)?(?P<pid>\d+)-[0-9a-f]{8}\.part"
)
# A download in progress writes a chunk at least every read timeout: a partial file of another host
# untouched for this long has no writer left.
ABANDONED_AFTER_S = 900


def local_path(download_dir: Path, version: FileVersion) -> Path:
    """Where a version is cached: the ETag is in the name, so a replaced object never matches."""
    key = Path(version.key)
    tag = re.sub(r"[^A-Za-z0-9-]", "", version.etag) or "noetag"
    name = key.name.removesuffix(".csv.gz")
    return download_dir / key.parent / f"{name}.{tag}.csv.gz"


def partial_path(target: Path) -> Path:
    """A new name for a download of ``target`` in progress, in the same folder (so the rename into
    place is atomic), naming this host and process."""
    return target.with_name(
        f".{target.name}.{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.part"
    )


def abandoned_partials(target: Path, now: float | None = None) -> list[Path]:
    """Partial downloads of the same session's file (any version) whose writer is gone: a process of
    this host that no longer runs, or a file nobody has written for ``ABANDONED_AFTER_S``."""
    session = target.name.split(".", 1)[0]
    horizon = (now or time.time()) - ABANDONED_AFTER_S
    found = []
    for path in target.parent.glob(f".{session}.*.part"):
        match = PARTIAL_NAME.fullmatch(path.name)
        if match is None:
            continue
        mine = match["host"] == socket.gethostname()
        try:
            if (mine and not _running(int(match["pid"]))) or path.stat().st_mtime < horizon:
                found.append(path)
        except FileNotFoundError:  # finished (renamed into place) meanwhile
            continue
    return sorted(found)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
