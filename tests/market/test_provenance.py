"""A file version survives XCom unchanged, and is the same type the hook, the load and the ledger use."""

from __future__ import annotations

import datetime as dt
import json

from marketbars.market.provenance import FileVersion


def test_a_file_version_round_trips_through_json() -> None:
    modified = dt.datetime(2024, 3, 6, 16, 2, 11, tzinfo=dt.UTC)
    version = FileVersion(
        "stocks", "1m", dt.date(2024, 3, 5), "us_stocks_sip/x.csv.gz", "abc-2", 123, modified
    )
    carried = json.loads(json.dumps(version.to_xcom()))
    assert carried["session"] == "2024-03-05" and carried["last_modified"] == "2024-03-06T16:02:11+00:00"
    assert FileVersion.from_xcom(carried) == version
    unknown = FileVersion("indices", "1d", dt.date(2024, 3, 5), "k", "e", 1)
    assert FileVersion.from_xcom(json.loads(json.dumps(unknown.to_xcom()))) == unknown
    # What the download task adds (status, local path) rides along without getting in the way.
    assert FileVersion.from_xcom({**carried, "status": "downloaded", "path": "/tmp/x"}) == version
