"""Dynamic task mapping: how work is batched under the expansion limit, and what a downstream task
receives from a mapped one."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any, NotRequired, TypedDict

# Every mapped expansion stays far below Airflow's max_map_length (1024) and the grid's comfort zone.
MAX_MAPPED_INSTANCES = 500


class FlatFileWork(TypedDict):
    """One ``flatfiles`` instance: these sessions' files of a dataset and timeframe, for these symbols."""

    dataset: str
    timeframe: str
    sessions: list[str]  # ISO dates
    symbols: list[str]


class RestWork(TypedDict):
    """One ``rest_fill`` instance: one symbol's sessions (ISO dates) per timeframe."""

    symbol: str
    dataset: str
    sessions: dict[str, list[str]]
    patch_flatfile_sessions: NotRequired[bool]


def batch_sessions(sessions: Sequence[dt.date], max_instances: int = MAX_MAPPED_INSTANCES) -> list[list[str]]:
    """Consecutive sessions in at most max_instances groups; one session per group when they fit."""
    if not sessions:
        return []
    size = math.ceil(len(sessions) / max_instances)
    return [[d.isoformat() for d in sessions[i : i + size]] for i in range(0, len(sessions), size)]


def outputs(value: Any, *, each: type) -> list[Any]:
    """One entry per mapped instance that pushed an output, whatever shape Airflow handed over.

    A downstream task gets a lazy sequence of the instances' outputs, but the bare output itself
    when a single instance pushed one, and nothing when the expansion was empty. ``each`` is the
    type one instance returns (``list`` or ``dict``).
    """
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [value] if each is dict else list(value)
    items = list(value)
    if each is list and items and all(isinstance(item, Mapping) for item in items):
        return [items]  # one instance's list of results
    return items
