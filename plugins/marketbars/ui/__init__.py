"""The "Market data" view in the Airflow UI: a FastAPI app the API server mounts (see
``plugins/market_data_plugin.py``), its JSON API and its page."""
