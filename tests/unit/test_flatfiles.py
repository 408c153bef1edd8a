import datetime as dt

import pytest

from marketbars import flatfiles


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


@pytest.mark.parametrize(
    ("dataset", "symbols"),
    [
        ("stocks", ["AAPL", "BRK.B", "NA", "F"]),
        ("indices", ["I:SPX", "I:VIX", "I:NDX"]),
        ("options", ["O:SPY251219C00650000", "O:AAPL240315P00170000"]),
        ("stocks", ["*"]),
        ("stocks", []),
    ],
)
def test_valid_selections(dataset: str, symbols: list[str]) -> None:
    assert flatfiles.symbol_problems(dataset, symbols) == []


def test_symbol_problems_explain_what_is_wrong() -> None:
    problems = flatfiles.symbol_problems("stocks", ["aapl", "I:SPX", "MSFT", "MSFT"])
    assert problems == [
        "'aapl' is not in the vendor's stocks ticker form (AAPL, BRK.B) (did you mean 'AAPL'?)",
        "'I:SPX' is not in the vendor's stocks ticker form (AAPL, BRK.B)",
        "symbols listed more than once: MSFT",
    ]
    assert flatfiles.symbol_problems("indices", ["SPX"]) == [
        "'SPX' is not in the vendor's indices ticker form (I:SPX, I:VIX)"
    ]
    assert flatfiles.symbol_problems("options", ["O:SPY25C650"]) != []
    assert flatfiles.symbol_problems("stocks", ["*", "AAPL"]) == [
        '"*" selects every ticker and must be alone'
    ]
