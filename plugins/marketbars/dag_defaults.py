"""Defaults every DAG of the project shares: ownership, retries with capped exponential backoff."""

from __future__ import annotations

import datetime as dt
from typing import Any

from marketbars.operators import DEFAULT_DOWNLOAD_DIR

OWNER = "market-data"

DEFAULT_ARGS: dict[str, Any] = {
    "owner": OWNER,
    "retries": 3,
    "retry_delay": dt.timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=30),
    "execution_timeout": dt.timedelta(hours=2),
}

# Templates for the shared Variables, with the defaults that apply when they are not set.
BUCKET_TEMPLATE = "{{ var.value.get('massive_flatfiles_bucket', 'flatfiles') }}"
DOWNLOAD_DIR_TEMPLATE = "{{ var.value.get('massive_download_dir', '" + DEFAULT_DOWNLOAD_DIR + "') }}"
