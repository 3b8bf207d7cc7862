import pytest

from profiles.stats import median_ci, percentile, summarize, tight_enough


def test_summary_percentiles_and_noise_flag():
    s = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s.latency_ms_p50 == 3.0 and s.latency_ms_min == 1.0
    assert s.latency_ms_p90 == pytest.approx(61.6)
    assert s.noisy and s.runs == 5
    quiet = summarize([10.0, 10.1, 9.9, 10.0, 10.05])
    assert not quiet.noisy and quiet.cv < 0.01


def test_median_ci_narrows_with_more_samples():
    few = [10 + (i % 5) * 0.1 for i in range(10)]
    many = [10 + (i % 5) * 0.1 for i in range(1000)]
    lo_f, hi_f = median_ci(few)
    lo_m, hi_m = median_ci(many)
    assert lo_f <= 10.2 <= hi_f and (hi_m - lo_m) <= (hi_f - lo_f)
    assert tight_enough(many, 0.01) and not tight_enough(few[:5], 0.01)


def test_percentile_interpolates():
    assert percentile([0.0, 10.0], 25) == 2.5
    with pytest.raises(ValueError):
        summarize([])
