"""Latency statistics from raw samples: percentiles, spread, and when to stop measuring.

The stopping rule is the one benchmark harnesses use for medians: keep timing until the
distribution-free confidence interval of the median (from order statistics) is within
``target_rel`` of the median, or the time budget is spent.
"""

from __future__ import annotations

import math
import statistics
from typing import Sequence

from targets.profile import LatencySummary

NOISY_CV = 0.10  # a coefficient of variation above this is flagged, not presented as exact


def median_ci(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free CI of the median: the order statistics around n/2 +- z*sqrt(n)/2."""
    ordered = sorted(samples)
    n = len(ordered)
    if n < 3:
        return ordered[0], ordered[-1]
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    half = z * math.sqrt(n) / 2
    lo = max(0, int(math.floor(n / 2 - half)))
    hi = min(n - 1, int(math.ceil(n / 2 + half)))
    return ordered[lo], ordered[hi]


def percentile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile of already sorted samples (q in [0, 100])."""
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(samples_ms: Sequence[float]) -> LatencySummary:
    if not samples_ms:
        raise ValueError("no latency samples")
    ordered = sorted(samples_ms)
    mean = statistics.fmean(ordered)
    cv = statistics.pstdev(ordered) / mean if mean > 0 else 0.0
    return LatencySummary(
        runs=len(ordered),
        latency_ms_p50=percentile(ordered, 50),
        latency_ms_p90=percentile(ordered, 90),
        latency_ms_p99=percentile(ordered, 99),
        latency_ms_mean=mean,
        latency_ms_min=ordered[0],
        cv=cv,
        median_ci_ms=median_ci(ordered),
        noisy=cv > NOISY_CV,
    )


def tight_enough(samples: Sequence[float], target_rel: float = 0.01, min_runs: int = 10) -> bool:
    """True once the median's 95% CI half-width is within ``target_rel`` of the median."""
    if len(samples) < min_runs:
        return False
    lo, hi = median_ci(samples)
    med = statistics.median(samples)
    return med > 0 and (hi - lo) / 2 <= target_rel * med
