"""``market.watchlist`` (the symbols the scheduled DAGs maintain) and ``market.watchlist_history``
(whether a newcomer's initial history has loaded)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from marketbars.warehouse.connection import Connection


def active_symbols(conn: Connection, asset_class: str) -> list[str]:
    """The active watchlist's symbols of one asset class, sorted."""
    rows = conn.execute(
        "SELECT symbol FROM market.watchlist WHERE active AND asset_class = %s ORDER BY symbol",
        (asset_class,),
    ).fetchall()
    return [str(symbol) for (symbol,) in rows]


def active_asset_classes(conn: Connection) -> dict[str, str]:
    """Every active watchlist symbol -> its asset class (the flat-file dataset)."""
    rows = conn.execute("SELECT symbol, asset_class FROM market.watchlist WHERE active ORDER BY symbol")
    return {str(symbol): str(asset_class) for symbol, asset_class in rows}


def symbols_needing_history(conn: Connection, symbols: Sequence[str]) -> list[str]:
    """The symbols whose initial history is still to load: planned but not completed, or new (no
    history record and no bar at all; a symbol with bars but no record was loaded otherwise)."""
    rows = conn.execute(
        """SELECT s FROM unnest(%s::text[]) AS s
           LEFT JOIN market.watchlist_history h ON h.symbol = s
           WHERE (h.symbol IS NOT NULL AND h.completed_at IS NULL)
              OR (h.symbol IS NULL AND NOT EXISTS (
                      SELECT 1 FROM market.historical_bars b WHERE b.symbol = s AND b.timeframe = '1m'))""",
        (list(symbols),),
    )
    return sorted(str(symbol) for (symbol,) in rows)


def plan_history(conn: Connection, symbols: Sequence[str], first: dt.date, last: dt.date) -> None:
    """Record that these symbols' history (first..last) is planned and not complete yet."""
    conn.execute(
        """INSERT INTO market.watchlist_history (symbol, first_session, last_session)
           SELECT s, %s, %s FROM unnest(%s::text[]) AS s
           ON CONFLICT (symbol) DO UPDATE SET first_session = EXCLUDED.first_session,
               last_session = EXCLUDED.last_session, planned_at = now(), completed_at = NULL""",
        (first, last, list(symbols)),
    )


def complete_history(conn: Connection, symbols: Sequence[str]) -> None:
    """Every piece of these symbols' planned history has loaded: they are established."""
    conn.execute(
        "UPDATE market.watchlist_history SET completed_at = now()"
        " WHERE symbol = ANY(%s) AND completed_at IS NULL",
        (list(symbols),),
    )


def follow_rename(conn: Connection, old: str, new: str) -> bool:
    """Keep refreshing a renamed ticker's company under its new ticker: ``new`` joins the watchlist
    (or is re-activated) with ``old``'s asset class, ``old`` stays listed but inactive. True when the
    watchlist changed (False: ``old`` is not active, e.g. a re-run after the change)."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE market.watchlist SET active = false WHERE symbol = %s AND active RETURNING asset_class",
            (old,),
        ).fetchone()
        if row is None:
            return False
        conn.execute(
            """INSERT INTO market.watchlist (symbol, asset_class) VALUES (%s, %s)
               ON CONFLICT (symbol) DO UPDATE SET active = true""",
            (new, row[0]),
        )
    return True
