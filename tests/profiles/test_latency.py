from profiles.latency import time_callable


def test_time_callable_counts_runs_and_keeps_samples():
    calls = []
    stats = time_callable(lambda: calls.append(1), warmup=2, min_runs=5, max_runs=7, budget_s=10.0)
    assert stats.runs == 7 and len(calls) == 9
    assert len(stats.samples_ms) == 7
    assert stats.latency_ms_min <= stats.latency_ms_p50 <= max(stats.samples_ms)


def test_budget_stops_after_min_runs():
    stats = time_callable(lambda: None, warmup=0, min_runs=3, max_runs=1000, budget_s=0.0)
    assert stats.runs == 3
