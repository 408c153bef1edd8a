"""watchlist_daily_backfill: the watchlist's recent sessions, from flat files where published, else REST."""
