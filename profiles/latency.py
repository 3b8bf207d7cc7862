"""Latency of a callable: warm-up, then timed runs until a run count or a time budget is reached."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable


@dataclass(frozen=True)
class LatencyStats:
    runs: int
    latency_ms_p50: float
    latency_ms_mean: float
    latency_ms_min: float
    cv: float  # coefficient of variation of the samples
    samples_ms: tuple[float, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def time_callable(fn: Callable[[], object], *, warmup: int = 3, min_runs: int = 5, max_runs: int = 50,
                  budget_s: float = 1.0) -> LatencyStats:
    """Time ``fn``: ``warmup`` untimed calls, then at least ``min_runs`` and at most ``max_runs``
    timed calls, stopping early once ``budget_s`` seconds of timed calls are spent."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    spent = 0.0
    while len(samples) < max_runs and (len(samples) < min_runs or spent < budget_s):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        spent += elapsed
        samples.append(elapsed * 1e3)
    mean = statistics.fmean(samples)
    cv = statistics.pstdev(samples) / mean if mean > 0 else 0.0
    return LatencyStats(len(samples), statistics.median(samples), mean, min(samples), cv, tuple(samples))
