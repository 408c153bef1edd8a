"""The outputs of a mapped task, as a downstream task receives them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


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
