#!/bin/bash
# First start of the Compose PostgreSQL: one database for Airflow's metadata, one for the warehouse.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username postgres <<SQL
CREATE ROLE airflow LOGIN PASSWORD '${AIRFLOW_DB_PASSWORD}';
CREATE DATABASE airflow OWNER airflow;
CREATE ROLE market LOGIN PASSWORD '${MARKET_DB_PASSWORD}';
CREATE DATABASE market OWNER market;
SQL
