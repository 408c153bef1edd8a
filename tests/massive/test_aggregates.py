import datetime as dt
import json

import pytest

from marketbars.massive import aggregates as rest

D = dt.date(2024, 3, 5)
T0930_MS = 1709649000000  # 2024-03-05 09:30 New York


def bar(t: int, **over: float) -> dict:
    return {"o": 10.0, "h": 11.0, "l": 9.5, "c": 10.5, "v": 1234.5, "vw": 10.2, "n": 7, "t": t} | over


def test_aggregates_path_asks_for_the_new_york_days_in_milliseconds() -> None:
    # 2024-03-05 00:00 EST = 1709614800000; the day ends 24 h later (after-hours bars are past 00:00 UTC).
    assert rest.aggregates_path("AAPL", "1m", D, D) == (
        "/v2/aggs/ticker/AAPL/range/1/minute/1709614800000/1709701199999"
    )
    # Across the DST change (10 March 2024) the range is 23 h shorter than 6 whole days would be.
    path = rest.aggregates_path("I:SPX", "1d", dt.date(2024, 3, 8), dt.date(2024, 3, 13))
    first, last = (int(x) for x in path.rsplit("/", 2)[1:])
    assert path.startswith("/v2/aggs/ticker/I:SPX/range/1/day/")
    assert last + 1 - first == (6 * 24 - 1) * 3_600_000
    assert rest.aggregates_path("O:SPY251219C00650000", "1m", D, D).startswith(
        "/v2/aggs/ticker/O:SPY251219C00650000/"
    )
    with pytest.raises(ValueError, match="no REST aggregates for timeframe '5m'"):
        rest.aggregates_path("AAPL", "5m", D, D)


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    now = dt.datetime(2015, 10, 21, 7, 28, 0, tzinfo=dt.UTC)
    assert rest.retry_after_seconds("3") == 3.0
    assert rest.retry_after_seconds(" 1.5 ") == 1.5
    assert rest.retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now) == 10.0
    assert rest.retry_after_seconds("Wed, 21 Oct 2015 07:27:00 GMT", now) == 0.0
    assert rest.retry_after_seconds(None) is None
    assert rest.retry_after_seconds("soon") is None


def test_results_become_bars_with_vwap_and_trades() -> None:
    parsed = rest.rest_bars(
        [bar(T0930_MS), bar(T0930_MS + 60_000, c=10.75)],
        ticker="AAPL",
        dataset="stocks",
        timeframe="1m",
        sessions=[D],
    )
    rows = parsed.bars.to_pylist()
    assert rows[0] == {
        "symbol": "AAPL",
        "ts": dt.datetime(2024, 3, 5, 14, 30, tzinfo=dt.UTC),
        "open": 10.0,
        "high": 11.0,
        "low": 9.5,
        "close": 10.5,
        "volume": 1234.5,
        "vwap": 10.2,
        "trades": 7,
    }
    assert rows[1]["close"] == 10.75
    assert parsed.loaded_by_session == {D: 2} and parsed.quarantined.num_rows == 0


def test_index_results_carry_no_volume_vwap_or_trades() -> None:
    results = [{"o": 5100.0, "h": 5102.0, "l": 5099.0, "c": 5101.0, "t": T0930_MS}]
    [row] = rest.rest_bars(
        results, ticker="I:SPX", dataset="indices", timeframe="1m", sessions=[D]
    ).bars.to_pylist()
    assert (row["volume"], row["vwap"], row["trades"]) == (None, None, None)


def test_bad_results_are_quarantined_with_their_json_and_session() -> None:
    saturday = D + dt.timedelta(days=4)
    wednesday = D + dt.timedelta(days=1)  # a trading session that was not requested
    results = [
        bar(T0930_MS),
        bar(T0930_MS + 60_000, h=9.0),  # high below low
        bar(T0930_MS + 120_000, v=None),  # no volume on a stock
        bar(int(dt.datetime(2024, 3, 9, 15, tzinfo=dt.UTC).timestamp() * 1000)),  # a Saturday
        bar(int(dt.datetime(2024, 3, 6, 15, tzinfo=dt.UTC).timestamp() * 1000)),  # Wednesday, not asked for
        {"o": 1.0, "h": 1.0, "l": 1.0, "c": 1.0},  # no timestamp
    ]
    parsed = rest.rest_bars(results, ticker="AAPL", dataset="stocks", timeframe="1m", sessions=[D])
    q = parsed.quarantined.to_pylist()
    assert [(r["reason"], r["session_date"]) for r in q] == [
        ("high_below_low", D),
        ("empty_field", D),
        ("timestamp_outside_session", saturday),
        ("empty_field", D),
    ]
    assert json.loads(q[0]["raw"]) == results[1]
    assert parsed.bars.num_rows == 1 and wednesday not in parsed.loaded_by_session
    assert (parsed.loaded_by_session, parsed.quarantined_by_session) == ({D: 1}, {D: 2})


def test_a_session_without_results_counts_zero() -> None:
    later = D + dt.timedelta(days=1)
    parsed = rest.rest_bars(
        [bar(T0930_MS)], ticker="AAPL", dataset="stocks", timeframe="1m", sessions=[D, later]
    )
    assert parsed.loaded_by_session == {D: 1, later: 0}
    empty = rest.rest_bars([], ticker="AAPL", dataset="stocks", timeframe="1m", sessions=[D])
    assert (empty.bars.num_rows, empty.loaded_by_session) == (0, {D: 0})


def test_the_next_page_is_asked_for_without_a_key_the_server_put_in_its_url() -> None:
    url = "https://api.massive.com/v2/aggs/ticker/AAPL/range/1/minute/1/2?cursor=YWJj%3D%3D&apiKey=secret-1"
    assert (
        rest.next_page_url(url)
        == "https://api.massive.com/v2/aggs/ticker/AAPL/range/1/minute/1/2?cursor=YWJj%3D%3D"
    )
    assert rest.next_page_url("https://api.massive.com/x?APIKEY=s&a=1") == "https://api.massive.com/x?a=1"
    assert rest.next_page_url(None) is None and rest.next_page_url("") is None
