"""Timeframes: what the warehouse holds, what sources deliver, and what is rolled up from 1m.

Light on purpose (no third-party imports): DAG files read these for their params' choices.
"""

from __future__ import annotations

# Intraday timeframe -> bar width in minutes. Every width divides into whole 5-minute steps.
INTRADAY_MINUTES: dict[str, int] = {"1m": 1, "5m": 5, "15m": 15, "1h": 60, "4h": 240}
DAILY = "1d"
TIMEFRAMES: tuple[str, ...] = (*INTRADAY_MINUTES, DAILY)
# What a source delivers (flat files, REST); the other timeframes are rolled up from 1m.
SOURCE_TIMEFRAMES: tuple[str, ...] = ("1m", DAILY)
DERIVED_MINUTES: dict[str, int] = {tf: m for tf, m in INTRADAY_MINUTES.items() if tf not in SOURCE_TIMEFRAMES}
