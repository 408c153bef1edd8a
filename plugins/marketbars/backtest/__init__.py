"""The backtest engine: bars in regular-session order, detectors that turn them into entry signals,
a simulator that fills those signals without look-ahead, and the metrics of the resulting trades.

Pure Python and numpy: no Airflow and no database here (``marketbars.backtest_store`` reads and
writes the warehouse, ``marketbars.backtest_tasks`` is the DAG's side).
"""
