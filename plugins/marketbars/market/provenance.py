"""Where bars came from: the identity of a source file's version and of an API answer.

The ledgers store these next to the bars they prove, so storage needs them without knowing the
vendor; the vendor adapter fills them in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict


class FileVersionXCom(TypedDict):
    """``FileVersion`` as XCom carries it: plain JSON values."""

    dataset: str
    timeframe: str
    session: str  # ISO date
    key: str
    etag: str
    size: int
    last_modified: str | None  # ISO timestamp


@dataclass(frozen=True)
class FileVersion:
    """One published version of one session's source file: the object key, and the ETag and size
    that say which version. A replaced object is a new version."""

    dataset: str
    timeframe: str
    session: dt.date
    key: str
    etag: str  # without quotes
    size: int
    last_modified: dt.datetime | None = None

    def to_xcom(self) -> FileVersionXCom:
        return {
            "dataset": self.dataset,
            "timeframe": self.timeframe,
            "session": self.session.isoformat(),
            "key": self.key,
            "etag": self.etag,
            "size": self.size,
            "last_modified": self.last_modified.isoformat() if self.last_modified else None,
        }

    @classmethod
    def from_xcom(cls, value: Mapping[str, Any]) -> FileVersion:
        modified = value.get("last_modified")
        return cls(
            dataset=str(value["dataset"]),
            timeframe=str(value["timeframe"]),
            session=dt.date.fromisoformat(str(value["session"])),
            key=str(value["key"]),
            etag=str(value["etag"]),
            size=int(value["size"]),
            last_modified=dt.datetime.fromisoformat(str(modified)) if modified else None,
        )


@dataclass(frozen=True)
class ApiFetch:
    """One symbol's API answer for some sessions of one timeframe: what was asked and how."""

    symbol: str
    asset_class: str
    timeframe: str
    sessions: tuple[dt.date, ...]
    requests: int  # HTTP requests sent, retries included
    request_ids: tuple[str, ...]
