"""Timing several ways of running one model against each other, fairly on a drifting machine.

A shared host's speed drifts by 2-3x between minutes, so two artifacts timed one after the other compare
the minutes, not the artifacts. `race` times every contender in each round (in a rotating order) and
takes the median of each contender's round medians. The build uses it to keep a rewrite only where it
measured faster, and to choose among a target's backends.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Mapping

#: a rewrite (or a later backend in the target's order) must be at least this much faster to be chosen, so that
#: two contenders within the noise give the same decision in every build (and byte-identical artifacts)
MARGIN = 0.03
#: a contender this many times slower than the fastest at warm-up is outclassed: no drift of this host (2-3x)
#: could let it win, so its warm-up time stands and the rounds are not spent on it (an untuned TVM BERT took
#: 6.6 s a run: most of a 10-minute build went to timing a candidate that was 300x behind)
OUTCLASSED = 10.0


@dataclass(frozen=True)
class RaceResult:
    median_ms: float
    round_medians_ms: tuple[float, ...]

    @property
    def spread(self) -> float:
        """Largest round median over smallest: how much the machine moved during the race."""
        lo = min(self.round_medians_ms)
        return max(self.round_medians_ms) / lo if lo > 0 else 1.0


def race(contenders: Mapping[str, Callable[[], object]], *, rounds: int = 5, budget_s: float = 2.0,
         max_runs: int = 50) -> dict[str, RaceResult]:
    """Median latency (ms) of each contender over ``rounds`` interleaved rounds within about ``budget_s``; a
    contender `OUTCLASSED` at warm-up keeps its warm-up time (one figure) and sits the rounds out."""
    names = list(contenders)
    first: dict[str, float] = {}
    for name in names:  # warm up (first-run allocation, lazy kernel selection), and size the rounds
        fn = contenders[name]
        fn()
        start = time.perf_counter()
        fn()
        first[name] = max(time.perf_counter() - start, 1e-6)
    fastest = min(first.values())
    outclassed = {n: first[n] * 1e3 for n in names if first[n] > OUTCLASSED * fastest}
    names = [n for n in names if n not in outclassed]
    per_round = budget_s / max(rounds, 1)
    runs = max(1, min(max_runs, int(per_round / sum(first[n] for n in names))))
    medians: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            fn, samples = contenders[name], []
            for _ in range(runs):
                start = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - start) * 1e3)
            medians[name].append(statistics.median(samples))
    timed = {n: RaceResult(statistics.median(m), tuple(round(x, 4) for x in m)) for n, m in medians.items()}
    return {n: timed[n] if n in timed else RaceResult(outclassed[n], (round(outclassed[n], 4),))
            for n in contenders}


def faster(challenger_ms: float, incumbent_ms: float, margin: float = MARGIN) -> bool:
    """Whether the challenger beats the incumbent by more than the margin."""
    return challenger_ms < incumbent_ms * (1 - margin)


def remember(kind: str, key: Mapping[str, object], decide: Callable[[], dict]) -> tuple[dict, bool]:
    """A decision made by measurement, kept in the cache (``<cache>/decisions/``) under ``key``: the first build
    measures and decides; every later build with the same inputs on the same machine takes the same decision, so
    rebuilding gives the same artifact. Returns (decision, whether it was remembered)."""
    import json

    from compiler.cache_dir import default_cache_dir
    from targets.files import write_text_atomic
    from targets.request import digest_json

    path = default_cache_dir() / "decisions" / kind / f"{digest_json(dict(key))}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())["decision"], True
        except (ValueError, KeyError):
            pass  # a damaged record is measured again
    decision = decide()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"key": dict(key), "decision": decision}, indent=1, sort_keys=True) + "\n")
    return decision, False
