"""market.bars_adjusted and the corporate-action tables against a real PostgreSQL: the factor maths to
the cent on hand-computed cases, the split's pre-market boundary, renames stitched under the
requested ticker, raw rows untouched, and the writers' replace-by-window."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg
import pytest

from marketbars.market.calendar import NEW_YORK
from marketbars.market.corporate_actions import Checked, Dividend, Split
from marketbars.warehouse import corporate_actions, partitions

pytestmark = pytest.mark.integration
D1, D2, D3, D4, D5, D6 = (dt.date(2024, 3, d) for d in (4, 5, 6, 7, 8, 11))  # Mon..Fri, Mon
START = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
END = dt.datetime(2024, 3, 12, tzinfo=dt.UTC)


def at(day: dt.date, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), NEW_YORK)


def bar(conn: psycopg.Connection, symbol: str, ts: dt.datetime, close: float, volume: float = 1000.0) -> None:
    timeframe = "1d" if (ts.hour, ts.minute) == (0, 0) else "1m"
    conn.execute(
        """INSERT INTO market.historical_bars (symbol, timeframe, ts, open, high, low, close, volume, vwap,
               trades, source) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 10, 'flatfile')""",
        (symbol, timeframe, ts, close, close, close, close, volume, close),
    )


def split(conn: psycopg.Connection, symbol: str, day: dt.date, split_from: int, split_to: int) -> None:
    conn.execute(
        "INSERT INTO market.splits (symbol, execution_date, split_from, split_to) VALUES (%s, %s, %s, %s)",
        (symbol, day, split_from, split_to),
    )


def dividend(conn: psycopg.Connection, symbol: str, day: dt.date, amount: str) -> None:
    conn.execute(
        """INSERT INTO market.dividends (symbol, ex_dividend_date, distribution_type, cash_amount, currency,
               source_id) VALUES (%s, %s, 'recurring', %s, 'USD', %s)""",
        (symbol, day, Decimal(amount), f"{symbol}-{day}"),
    )


def read(
    conn: psycopg.Connection,
    symbols: list[str],
    timeframe: str = "1d",
    adjust: str = "splits",
    follow: bool = False,
) -> list[tuple[str, dt.date | dt.datetime, float, float | None]]:
    """(symbol, New York date of a 1d bar or the 1m bar's start, close in cents, volume)."""
    rows = conn.execute(
        """SELECT symbol, ts, round(close::numeric, 6)::float8, volume
           FROM market.bars_adjusted(%s, %s, %s, %s, %s, %s) ORDER BY symbol, ts""",
        (symbols, timeframe, START, END, adjust, follow),
    ).fetchall()
    return [(s, ts.astimezone(NEW_YORK).date() if timeframe == "1d" else ts, c, v) for s, ts, c, v in rows]


@pytest.fixture
def bars(warehouse_conn: psycopg.Connection) -> psycopg.Connection:
    partitions.ensure_partitions(warehouse_conn, D1, D6)
    return warehouse_conn


def test_two_splits_multiply_and_volume_is_divided(bars: psycopg.Connection) -> None:
    for day, close in ((D1, 600), (D2, 600), (D3, 300), (D4, 300), (D5, 100), (D6, 100)):
        bar(bars, "TWO", at(day), close, volume=1000)
    split(bars, "TWO", D3, 1, 2)  # 2-for-1
    split(bars, "TWO", D5, 1, 3)  # 3-for-1
    assert read(bars, ["TWO"]) == [
        ("TWO", D1, 100.0, 6000.0), ("TWO", D2, 100.0, 6000.0),
        ("TWO", D3, 100.0, 3000.0), ("TWO", D4, 100.0, 3000.0),
        ("TWO", D5, 100.0, 1000.0), ("TWO", D6, 100.0, 1000.0),
    ]  # fmt: skip
    assert read(bars, ["TWO"], adjust="none") == [
        ("TWO", d, float(c), 1000.0)
        for d, c in ((D1, 600), (D2, 600), (D3, 300), (D4, 300), (D5, 100), (D6, 100))
    ]


def test_a_reverse_split_raises_earlier_prices(bars: psycopg.Connection) -> None:
    for day, close in ((D1, 2.13), (D2, 2.07), (D3, 20.70)):
        bar(bars, "REV", at(day), close, volume=5000)
    split(bars, "REV", D3, 10, 1)  # 1-for-10
    assert read(bars, ["REV"]) == [
        ("REV", D1, 21.3, 500.0), ("REV", D2, 20.7, 500.0), ("REV", D3, 20.7, 5000.0)
    ]  # fmt: skip


def test_a_split_and_a_dividend_in_one_week_to_the_cent(bars: psycopg.Connection) -> None:
    for day, close in ((D1, 100.00), (D2, 99.20), (D3, 98.80), (D4, 49.70)):
        bar(bars, "SD", at(day), close)
    dividend(bars, "SD", D2, "1.00")  # 1 - 1.00 / 100.00 (D1's close) = 0.99
    split(bars, "SD", D4, 1, 2)
    assert read(bars, ["SD"], adjust="total_return") == [
        ("SD", D1, 49.5, 2000.0),  # 100.00 x 0.99 x 0.5
        ("SD", D2, 49.6, 2000.0),  # 99.20 x 0.5
        ("SD", D3, 49.4, 2000.0),
        ("SD", D4, 49.7, 1000.0),
    ]
    assert [c for _, _, c, _ in read(bars, ["SD"])] == [50.0, 49.6, 49.4, 49.7]  # splits only


def test_the_split_applies_from_the_execution_dates_pre_market(bars: psycopg.Connection) -> None:
    last_before = at(D2, 19, 59)  # the prior day's post-market: the last pre-split bar
    pre_market = at(D3, 4, 0)
    bar(bars, "PM", last_before, 100.0)
    bar(bars, "PM", pre_market, 25.0)
    split(bars, "PM", D3, 1, 4)
    assert read(bars, ["PM"], timeframe="1m") == [
        ("PM", last_before, 25.0, 4000.0),
        ("PM", pre_market, 25.0, 1000.0),
    ]


def test_a_dividend_uses_the_last_regular_close_when_there_is_no_daily_bar(bars: psycopg.Connection) -> None:
    bar(bars, "MIN", at(D1, 15, 59), 50.00)  # the regular session's last minute
    bar(bars, "MIN", at(D1, 19, 59), 51.00)  # post-market: not the close
    dividend(bars, "MIN", D2, "0.50")  # 1 - 0.50 / 50.00 = 0.99
    assert [c for _, _, c, _ in read(bars, ["MIN"], timeframe="1m", adjust="total_return")] == [49.5, 50.49]
    actions = corporate_actions.applied_actions(bars, ["MIN"], "total_return", False, D1)
    assert [(a.kind, a.day, a.price_factor) for a in actions] == [("dividend", D2, pytest.approx(0.99))]
    assert "0.50 USD recurring, previous close 50" in actions[0].detail


def test_a_rename_reads_as_one_history_under_the_requested_ticker(bars: psycopg.Connection) -> None:
    for day, close in ((D1, 80.0), (D2, 82.0)):
        bar(bars, "OLD", at(day), close)
    for day, close in ((D3, 41.0), (D4, 42.0)):
        bar(bars, "NEW", at(day), close)
    bar(bars, "OLD", at(D4), 7.0)  # the old ticker, reused by another company after the change
    bars.execute(
        """INSERT INTO market.ticker_history (composite_figi, valid_from, ticker) VALUES
           ('FIGI1', '2010-01-04', 'OLD'), ('FIGI1', %s, 'NEW')""",
        (D3,),
    )
    split(bars, "OLD", D2, 1, 2)  # under the old ticker, before the change: applies to NEW's history
    assert read(bars, ["NEW"], follow=True) == [
        ("NEW", D1, 40.0, 2000.0), ("NEW", D2, 82.0, 1000.0),
        ("NEW", D3, 41.0, 1000.0), ("NEW", D4, 42.0, 1000.0),
    ]  # fmt: skip
    assert [d for _, d, _, _ in read(bars, ["NEW"])] == [D3, D4], "without follow_renames: its own bars"
    assert read(bars, ["OLD"]) == [
        ("OLD", D1, 40.0, 2000.0),
        ("OLD", D2, 82.0, 1000.0),
        ("OLD", D4, 7.0, 1000.0),
    ]
    assert corporate_actions.company_tickers(bars, ["NEW"]) == [("NEW", "OLD", D3)]
    assert corporate_actions.renamed_on(bars, ["NEW", "OLD", "AAPL"]) == {"NEW": D3}, "OLD was the first"


def test_reads_never_change_raw_rows_and_a_bad_adjust_is_refused(bars: psycopg.Connection) -> None:
    bar(bars, "RAW", at(D1), 600.0)
    split(bars, "RAW", D2, 1, 6)
    before = bars.execute("SELECT * FROM market.historical_bars").fetchall()
    assert read(bars, ["RAW"])[0][2] == 100.0
    default = bars.execute(
        "SELECT close FROM market.bars_adjusted(ARRAY['RAW'], '1d', %s, %s)", (START, END)
    ).fetchall()
    assert default == [(100.0,)], "adjust defaults to splits"
    assert bars.execute("SELECT * FROM market.historical_bars").fetchall() == before
    with pytest.raises(
        psycopg.errors.InvalidParameterValue, match="adjust must be none, splits or total_return"
    ):
        read(bars, ["RAW"], adjust="dividends")


def test_a_future_split_adjusts_nothing_until_it_executes(bars: psycopg.Connection) -> None:
    bar(bars, "FUT", at(D1), 600.0)
    split(bars, "FUT", dt.date.today() + dt.timedelta(days=30), 1, 2)  # announced
    assert read(bars, ["FUT"])[0][2] == 600.0


def test_a_window_write_replaces_its_window_only(warehouse_conn: psycopg.Connection) -> None:
    def make(day: dt.date, ratio: int, source_id: str) -> Split:
        return Split("W", day, Decimal(1), Decimal(ratio), "forward_split", source_id)

    old, recent = make(dt.date(2020, 1, 2), 2, "a"), make(dt.date(2024, 6, 3), 4, "b")
    whole = corporate_actions.Fetch("split", ["W"], None, None, 1, ["r1"], "run")
    corporate_actions.replace_splits(warehouse_conn, whole, Checked(accepted=[old, recent]))
    window = corporate_actions.Fetch("split", ["W"], dt.date(2024, 1, 1), None, 1, ["r2"], "run")
    corporate_actions.replace_splits(
        warehouse_conn, window, Checked(accepted=[make(dt.date(2024, 6, 3), 5, "c")])
    )
    rows = warehouse_conn.execute(
        "SELECT execution_date, split_to::int, source_id FROM market.splits ORDER BY 1"
    ).fetchall()
    assert rows == [(dt.date(2020, 1, 2), 2, "a"), (dt.date(2024, 6, 3), 5, "c")]
    moved = make(dt.date(2024, 6, 4), 5, "a")  # the vendor moved record a into the window
    corporate_actions.replace_splits(warehouse_conn, window, Checked(accepted=[moved]))
    rows = warehouse_conn.execute("SELECT execution_date, source_id FROM market.splits ORDER BY 1").fetchall()
    assert rows == [(dt.date(2024, 6, 4), "a")]
    assert corporate_actions.without_full_history(warehouse_conn, "split", ["W", "X"]) == ["X"]


def test_dividends_keep_a_regular_and_a_special_on_one_ex_date(warehouse_conn: psycopg.Connection) -> None:
    def make(kind: str, amount: str, source_id: str) -> Dividend:
        return Dividend("DV", D2, Decimal(amount), "USD", kind, source_id)

    fetch = corporate_actions.Fetch("dividend", ["DV"], None, None, 1, [], None)
    corporate_actions.replace_dividends(
        warehouse_conn,
        fetch,
        Checked(accepted=[make("recurring", "0.25", "r"), make("special", "1.00", "s")]),
    )
    assert warehouse_conn.execute("SELECT count(*) FROM market.dividends").fetchone() == (2,)
