"""Run task bodies as Airflow runs task instances: each in a process of its own, forked from a parent
that has the Airflow task SDK loaded (as a worker's task supervisor has), ``workers`` at a time.

Each task reports its own seconds and peak RSS (VmHWM, the forked parent's resident pages included,
as for a real task process). A failed task fails the benchmark with its error.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


def memory_mb(field: str) -> float:
    """A field of this process's /proc status (VmRSS, VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _timed(task: Callable[..., dict[str, Any]], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    result = task(**kwargs)
    return result | {"seconds": time.perf_counter() - started, "rss": memory_mb("VmHWM")}


def run(
    task: Callable[..., dict[str, Any]], jobs: Sequence[Mapping[str, Any]], workers: int
) -> list[dict[str, Any]]:
    """``task(**job)`` for every job, each in a fresh process, ``workers`` at a time; results in order."""
    import airflow.sdk  # noqa: F401  what the supervisor a task process is forked from has loaded

    context = multiprocessing.get_context("fork")
    with context.Pool(workers, maxtasksperchild=1) as pool:
        return pool.starmap(_timed, [(task, job) for job in jobs], chunksize=1)
