"""The backtest engine: bars in regular-session order, detectors that turn them into entry signals,
a simulator that fills those signals without look-ahead, and the metrics of the resulting trades.

Pure Python and numpy: no Airflow and no database here (``marketbars.warehouse.backtests`` reads and
writes the warehouse, ``marketbars.pipelines.backtest`` is the DAG's side).
"""
