"""Assets the DAGs produce and consume (data-aware scheduling)."""

from airflow.sdk import Asset

# Updated whenever a DAG has loaded bars; the gap check and backtests run after it.
HISTORICAL_BARS = Asset(name="market.historical_bars")
