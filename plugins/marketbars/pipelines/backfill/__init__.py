"""historical_bulk_backfill: a date range of flat files into the warehouse."""
