"""One package per DAG: ``rules`` (pure), ``tasks`` (the Airflow side) and ``report`` where it has
one; ``common`` holds what the DAGs share."""
