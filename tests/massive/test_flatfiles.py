import datetime as dt

import pytest

from marketbars.massive import flatfiles
from marketbars.pipelines.common.published import exists_in


@pytest.mark.parametrize(
    ("dataset", "timeframe", "key"),
    [
        ("stocks", "1m", "us_stocks_sip/minute_aggs_v1/2024/03/2024-03-05.csv.gz"),
        ("stocks", "1d", "us_stocks_sip/day_aggs_v1/2024/03/2024-03-05.csv.gz"),
        ("options", "1m", "us_options_opra/minute_aggs_v1/2024/03/2024-03-05.csv.gz"),
        ("options", "1d", "us_options_opra/day_aggs_v1/2024/03/2024-03-05.csv.gz"),
        ("indices", "1m", "us_indices/minute_aggs_v1/2024/03/2024-03-05.csv.gz"),
        ("indices", "1d", "us_indices/day_aggs_v1/2024/03/2024-03-05.csv.gz"),
    ],
)
def test_object_key(dataset: str, timeframe: str, key: str) -> None:
    assert flatfiles.object_key(dataset, timeframe, dt.date(2024, 3, 5)) == key


def test_object_key_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'crypto'"):
        flatfiles.object_key("crypto", "1m", dt.date(2024, 3, 5))
    with pytest.raises(ValueError, match="unknown timeframe '5m'"):
        flatfiles.object_key("stocks", "5m", dt.date(2024, 3, 5))


def test_headers_are_the_vendors_exact_order() -> None:
    assert (
        ",".join(flatfiles.HEADERS["stocks"]) == "ticker,volume,open,close,high,low,window_start,transactions"
    )
    assert flatfiles.HEADERS["options"] == flatfiles.HEADERS["stocks"]
    assert ",".join(flatfiles.HEADERS["indices"]) == "ticker,open,close,high,low,window_start"


def test_object_lookup_lists_each_month_once() -> None:
    prefixes = flatfiles.month_prefixes(["stocks", "stocks"], [dt.date(2024, 11, 26), dt.date(2024, 12, 2)])
    assert sorted(prefixes) == [
        "us_stocks_sip/day_aggs_v1/2024/11/",
        "us_stocks_sip/day_aggs_v1/2024/12/",
        "us_stocks_sip/minute_aggs_v1/2024/11/",
        "us_stocks_sip/minute_aggs_v1/2024/12/",
    ]
    listing = {f"{p}2024-11-26.csv.gz": "etag" for p in prefixes if p.startswith("us_stocks_sip/minute")}
    exists = exists_in(listing)
    assert exists is not None and exists_in(None) is None
    assert exists("stocks", "1m", dt.date(2024, 11, 26)) and not exists("stocks", "1d", dt.date(2024, 11, 26))
