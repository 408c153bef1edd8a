"""Synthetic market data for the benchmarks: seeded regular-session minute bars, and a database of
the embedded PostgreSQL (or MARKETBARS_PG_URL's server) loaded with them once and reused while it
holds every bar expected."""

from __future__ import annotations

import datetime as dt
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def generate_bars(symbols: Sequence[str], days: Sequence[dt.date]) -> Iterator[Any]:
    """One pyarrow table (BAR_SCHEMA) of regular-session 1m bars per symbol, seeded."""
    import numpy as np
    import pyarrow as pa

    from marketbars.market.bars import BAR_SCHEMA
    from marketbars.market.calendar import session_schedule

    _, opens, closes = session_schedule(days[0], days[-1])
    lengths = [(c - o) // 60_000_000 for o, c in zip(opens, closes, strict=True)]
    minute = np.concatenate([np.arange(n) for n in lengths])  # minutes after the open
    length = np.repeat(lengths, lengths)
    ts = np.concatenate(
        [o + np.arange(n, dtype=np.int64) * 60_000_000 for o, n in zip(opens, lengths, strict=True)]
    )
    first = np.zeros(len(ts), bool)
    first[np.cumsum([0, *lengths[:-1]])] = True
    # U-shaped intraday profiles, each normalised to a mean of 1 over a full session.
    shape = 1 + 1.6 * np.exp(-minute / 25) + 0.7 * np.exp(-(length - 1 - minute) / 25)
    volume_shape = 1 + 2.5 * np.exp(-minute / 20) + 2.0 * np.exp(-(length - 1 - minute) / 15)
    full = np.arange(390)
    shape /= (1 + 1.6 * np.exp(-full / 25) + 0.7 * np.exp(-(389 - full) / 25)).mean()
    volume_shape /= (1 + 2.5 * np.exp(-full / 20) + 2.0 * np.exp(-(389 - full) / 15)).mean()
    rng = np.random.default_rng(20240628)
    for symbol in symbols:
        index = symbol.startswith("I:")
        price = 5200.0 if index else float(rng.uniform(15, 400))
        daily_sigma = 0.009 if index else float(rng.uniform(0.012, 0.03))
        sigma = daily_sigma * 0.85 / math.sqrt(390) * shape  # per minute; the rest is overnight
        moves = rng.standard_t(4, len(ts)) / math.sqrt(2) * sigma  # t(4) has variance 2
        ticks = rng.normal(0, 0.1, len(ts)) * sigma  # open vs the previous close within a session
        gaps = rng.normal(0, daily_sigma * 0.5, len(ts))
        steps = np.where(first, gaps, ticks)
        steps[0] = 0.0
        drift = rng.normal(0.0, 0.0005)  # a per-symbol trend, per session
        log_close = math.log(price) + np.cumsum(steps + moves + np.where(first, drift, 0.0))
        close = np.round(np.exp(log_close), 2)
        open_ = np.round(np.exp(log_close - moves), 2)
        wick = np.abs(rng.normal(0, 0.6, (2, len(ts)))) * sigma
        wick *= np.where(rng.random(len(ts)) < 0.002, 20.0, 1.0)  # now and then a spike both ways
        high = np.maximum(np.round(np.maximum(open_, close) * (1 + wick[0]), 2), np.maximum(open_, close))
        low = np.minimum(np.round(np.minimum(open_, close) * (1 - wick[1]), 2), np.minimum(open_, close))
        if index:
            volume = pa.nulls(len(ts), pa.float64())
            trades = pa.nulls(len(ts), pa.int64())
        else:
            per_minute = float(rng.uniform(2e6, 3e7)) / 390
            surge = 1 + 1.5 * np.abs(moves) / sigma
            shares = per_minute * volume_shape * surge * rng.lognormal(-0.125, 0.5, len(ts))
            volume_values = np.maximum(np.round(shares, -2), 100)
            volume = pa.array(volume_values)
            trades = pa.array(np.maximum(volume_values // 150, 1).astype(np.int64))
        yield pa.table(
            {
                "symbol": pa.array([symbol] * len(ts)),
                "ts": pa.array(ts).cast(pa.timestamp("us", tz="UTC")),
                "open": open_,
                "high": high,
                "low": low,
                "close": close,
                "volume": volume,
                "vwap": pa.nulls(len(ts), pa.float64()),
                "trades": trades,
            },
            schema=BAR_SCHEMA,
        )


def bars_per_symbol(days: Sequence[dt.date]) -> tuple[int, int]:
    """1m and 5m regular-session bars per symbol over these sessions (early closes included)."""
    from marketbars.market.calendar import session_schedule

    _, opens, closes = session_schedule(days[0], days[-1])
    minutes = [(c - o) // 60_000_000 for o, c in zip(opens, closes, strict=True)]
    return sum(minutes), sum(math.ceil(m / 5) for m in minutes)


def load_minute_bars(conn: Any, symbols: Sequence[str], days: Sequence[dt.date]) -> None:
    """``generate_bars`` COPYed into market.historical_bars in one transaction, then analysed."""
    from psycopg import sql

    from marketbars.warehouse import partitions
    from marketbars.warehouse.bars import COPY_SCHEMA, copy_rows
    from marketbars.warehouse.copy import copy_in

    partitions.ensure_partitions(conn, days[0], days[-1])
    with conn.transaction(), conn.cursor() as cur:
        for table in generate_bars(symbols, days):
            copy_in(cur, sql.SQL("market.historical_bars"), COPY_SCHEMA, copy_rows(table, "1m", "flatfile"))
    conn.execute("VACUUM (ANALYZE) market.historical_bars")


def database_loaded_once(
    name: str, what: str, held: Callable[[Any], T], expected: T, load: Callable[[Any], None]
) -> Any:
    """The database ``name``, reused while ``held(conn)`` is ``expected``; otherwise made afresh and
    filled by ``load(conn)`` (``what`` says what, while it loads). Exits when a load falls short."""
    from marketbars.warehouse import migrations
    from sandbox.services import start_postgres

    server = start_postgres(ROOT / ".sandbox" / "pg")
    with server.connect() as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    db = server.with_database(name) if exists else server.create_database(name)
    with db.connect() as conn:
        migrations.migrate(conn)
        if held(conn) == expected:
            return db
    db = server.create_database(name)  # an interrupted or outdated load: start over
    print(f"loading {what} once ...", flush=True)
    started = time.perf_counter()
    with db.connect() as conn:
        migrations.migrate(conn)
        load(conn)
        found = held(conn)
    print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)
    if found != expected:
        sys.exit(f"{name} holds {found} after its load, expected {expected}")
    return db
