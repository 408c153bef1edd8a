"""Market bars warehouse: Massive (Polygon) flat files and REST into PostgreSQL, and backtests on it.

Imports run one way (checked by import-linter in ``make test``):
``pipelines`` -> ``operators``, ``alerting`` -> ``settings`` -> ``warehouse``, ``massive`` -> ``backtest``
-> ``market``. See the README's layout section for what lives where.
"""
