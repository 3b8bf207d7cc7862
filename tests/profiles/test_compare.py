"""The regression gate: known shifts are caught, noise is not, and the outputs are well formed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compiler.cli import main
from tests.profiles.junit_schema import validate_junit
from profiles.compare import bootstrap_ratio, compare, junit, load_profiles, markdown, update_baseline
from tests.profiles.factories import make_profile


def _profile(samples, *, target="host", precision="fp32", size=1.0, cosine=1.0, method="measured:host"):
    return {"model": "m", "target": target, "backend": "onnxruntime", "precision": precision,
            "latency_samples_ms": list(samples), "latency_ms_p50": float(np.median(samples)), "latency_method": method,
            "energy_mj": 1.0, "energy_method": "estimated:roofline-v1", "peak_memory_mb": 100.0, "artifact_mb": size,
            "min_cosine": cosine}


def _cells(**profiles):
    return {f"m/{p['target']}/onnxruntime/{p['precision']}": make_profile(**p) for p in profiles.values()}


RNG = np.random.default_rng(0)
BASE = RNG.normal(10.0, 0.3, 200)


def test_a_ten_percent_slowdown_is_caught():
    ratio, (lo, hi) = bootstrap_ratio(BASE, BASE * 1.10 + RNG.normal(0, 0.05, 200))
    assert 1.08 < ratio < 1.12 and lo > 1.0
    verdicts, _, _ = compare(_cells(a=_profile(BASE)), _cells(a=_profile(BASE * 1.15)), {"latency": 1.10})
    latency = next(v for v in verdicts if v.metric == "latency")
    assert latency.status == "regression" and latency.test == "bootstrap ratio of medians"


def test_a_noisy_equal_pair_is_not_a_regression():
    noisy = np.random.default_rng(1).lognormal(np.log(10), 0.5, 15)
    other = np.random.default_rng(2).lognormal(np.log(10), 0.5, 15)
    verdicts, _, _ = compare(_cells(a=_profile(noisy)), _cells(a=_profile(other)), {"latency": 1.05})
    latency = next(v for v in verdicts if v.metric == "latency")
    assert latency.status == "ok"
    assert latency.interval[0] < 1.0 < latency.interval[1]


def test_direct_metrics_accuracy_added_removed_and_int8_alarm():
    base = _cells(a=_profile(BASE, size=1.0), b=_profile(BASE, target="old"))
    cur = _cells(a=_profile(BASE, size=1.2, cosine=0.99), c=_profile(BASE, target="new"),
                 q=_profile(BASE * 1.3, precision="int8"))
    verdicts, added, removed = compare(base, cur)
    by = {(v.key, v.metric): v for v in verdicts}
    assert by[("m/host/onnxruntime/fp32", "size")].status == "regression"
    assert by[("m/host/onnxruntime/fp32", "accuracy")].status == "regression"
    assert by[("m/host/onnxruntime/int8", "int8_vs_float")].status == "alarm"
    assert added == ["m/host/onnxruntime/int8", "m/new/onnxruntime/fp32"] and removed == ["m/old/onnxruntime/fp32"]
    text = markdown(verdicts, added, removed)
    assert "**regression**" in text and "Removed: m/old/onnxruntime/fp32" in text
    suite = validate_junit(junit(verdicts))
    assert suite.tag == "testsuite" and int(suite.get("failures")) == 2
    assert all(case.get("classname") and case.get("name") for case in suite.iter("testcase"))


def _write(root: Path, profile: dict) -> None:
    folder = root / profile["model"] / profile["target"]
    folder.mkdir(parents=True)
    (folder / "profile.json").write_text(json.dumps(make_profile(**profile).to_dict()))


def test_cli_gate_exit_codes_and_baseline_update(tmp_path, capsys):
    base, same, slow = tmp_path / "base", tmp_path / "same", tmp_path / "slow"
    _write(base, _profile(BASE))
    _write(same, _profile(BASE[::-1]))
    _write(slow, _profile(BASE * 1.3))
    assert main(["compare", str(base), str(same)]) == 0
    report, summary = tmp_path / "r.xml", tmp_path / "s.md"
    assert main(["compare", str(base), str(slow), "--junit", str(report), "--summary", str(summary)]) == 1
    assert "REGRESSION" in capsys.readouterr().out
    assert validate_junit(report.read_text()).get("failures") == "1" and "regression" in summary.read_text()
    assert main(["baseline", "update", str(slow), str(base)]) == 0
    assert main(["compare", str(base), str(slow)]) == 0  # accepted as the new baseline
    assert main(["compare", str(base), str(tmp_path / "nope")]) == 2
    assert main(["compare", str(base), str(slow), "--threshold", "speed=2"]) == 2


def test_old_baseline_schema_is_refused_by_version(tmp_path):
    _write(tmp_path, _profile(BASE))
    path = tmp_path / "m" / "host" / "profile.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "schema_version": 0}))
    with pytest.raises(Exception, match="profile schema_version 0; this chipfit reads 2"):
        load_profiles(tmp_path)


def test_update_baseline_needs_profiles(tmp_path):
    with pytest.raises(Exception, match="holds no profile.json"):
        update_baseline(tmp_path, tmp_path / "b")


def test_estimated_figures_are_gated_at_the_fixed_efficiency_and_per_target_thresholds_apply():
    def estimated(latency, fixed, target="npu"):
        p = _profile([1.0], target=target, method="estimated:roofline-v1")
        p.update(latency_samples_ms=None, latency_ms_p50=latency,
                 estimate_fixed={"efficiency": 0.3, "latency_ms": fixed, "energy_mj": 1.0})
        return p

    # the fitted estimate moved 20% (a different fit), the artifact did not: no regression
    verdicts, _, _ = compare(_cells(a=estimated(1.0, 2.0)), _cells(a=estimated(1.2, 2.0)), {"latency": 1.1})
    latency = next(v for v in verdicts if v.metric == "latency")
    assert latency.status == "ok" and "fixed efficiency" in latency.note
    # the artifact got 20% more expensive: a regression, unless that target allows 25%
    verdicts, _, _ = compare(_cells(a=estimated(1.0, 2.0)), _cells(a=estimated(1.0, 2.4)), {"latency": 1.1})
    assert next(v for v in verdicts if v.metric == "latency").status == "regression"
    verdicts, _, _ = compare(_cells(a=estimated(1.0, 2.0)), _cells(a=estimated(1.0, 2.4)), {"latency": 1.1},
                             {"npu": {"latency": 1.25}})
    latency = next(v for v in verdicts if v.metric == "latency")
    assert latency.status == "ok" and latency.threshold == 1.25


def test_measured_energy_is_gated_on_its_repeats():
    def metered(samples):
        p = _profile(BASE)
        p.update(energy_mj=float(np.median(samples)), energy_samples_mj=list(samples), energy_method="measured:rapl")
        return p

    rng = np.random.default_rng(3)
    steady = rng.normal(5.0, 0.05, 5)
    verdicts, _, _ = compare(_cells(a=metered(steady)), _cells(a=metered(steady * 1.2)), {"energy": 1.1})
    energy = next(v for v in verdicts if v.metric == "energy")
    assert energy.status == "regression" and energy.test == "bootstrap ratio of medians"
    noisy = rng.lognormal(np.log(5.0), 0.4, 5)
    verdicts, _, _ = compare(_cells(a=metered(noisy)), _cells(a=metered(noisy[::-1] * 1.05)), {"energy": 1.01})
    assert next(v for v in verdicts if v.metric == "energy").status == "ok"


def test_runner_processes_in_different_states_are_noise_a_shift_in_all_of_them_is_not():
    rng = np.random.default_rng(4)

    def processes(levels):  # each runner process spends its life at one level
        samples = np.concatenate([rng.normal(level, 0.01 * level, 100) for level in levels])
        p = _profile(samples)
        p["latency_groups"] = [100] * len(levels)
        return p

    # the same machine, processes landing in a fast (1.0) or slow (1.5) state: the pooled median moves ~1.5x
    base, cur = processes([1.0, 1.0, 1.5]), processes([1.5, 1.5, 1.0])
    flat = compare(_cells(a={**base, "latency_groups": None}), _cells(a={**cur, "latency_groups": None}),
                   {"latency": 1.1})[0]
    assert next(v for v in flat if v.metric == "latency").status == "regression"  # what one process each would say
    verdicts, _, _ = compare(_cells(a=base), _cells(a=cur), {"latency": 1.1})
    latency = next(v for v in verdicts if v.metric == "latency")
    assert latency.status == "ok" and latency.interval[0] < 1.0 and "3 vs 3 runner processes" in latency.test
    # a real 20% slowdown in every process is still caught
    verdicts, _, _ = compare(_cells(a=processes([1.0, 1.01, 0.99])), _cells(a=processes([1.2, 1.21, 1.19])),
                             {"latency": 1.1})
    assert next(v for v in verdicts if v.metric == "latency").status == "regression"


def test_a_target_that_chose_another_backend_is_compared_not_failed():
    from profiles.compare import match_backend_switches

    old = make_profile(target="arm64-cortex-a76", backend="executorch")
    new = make_profile(target="arm64-cortex-a76", backend="onnxruntime")
    baseline, current = {old.key: old}, {new.key: new}
    matched, notes = match_backend_switches(baseline, current)
    assert set(matched) == {new.key}
    (note,) = notes
    assert note.status == "alarm" and "executorch -> onnxruntime" in note.note
    verdicts, added, removed = compare(matched, current)
    assert not added and not removed and {v.metric for v in verdicts} >= {"latency", "size"}
