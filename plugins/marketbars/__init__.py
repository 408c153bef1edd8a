"""Market bars warehouse: ingestion of Massive (Polygon) flat files into PostgreSQL.

Pure rules (calendar, flat-file format, validation) live in modules without Airflow imports;
hooks own connections; operators orchestrate hooks. See the README for the architecture.
"""
