"""Keeping a rewrite only where it pays, and choosing a target's backend, by measurement."""

import json
import time

from compiler.build import BuildOptions, build
from compiler.speed import MARGIN, faster, race


def test_race_times_every_contender_in_every_round():
    timed = race({"slow": lambda: time.sleep(0.004), "fast": lambda: time.sleep(0.001)}, rounds=3, budget_s=0.3)
    assert len(timed["slow"].round_medians_ms) == len(timed["fast"].round_medians_ms) == 3
    assert timed["fast"].median_ms < timed["slow"].median_ms
    assert faster(timed["fast"].median_ms, timed["slow"].median_ms)
    assert not faster(1.0, 1.0) and not faster(1.0 - MARGIN / 2, 1.0)


def test_a_contender_far_behind_at_warm_up_sits_the_rounds_out():
    calls = {"slow": 0, "fast": 0}

    def run(name, seconds):
        def fn():
            calls[name] += 1
            time.sleep(seconds)
        return fn

    timed = race({"slow": run("slow", 0.05), "fast": run("fast", 0.001)}, rounds=3, budget_s=0.3)
    assert calls["slow"] == 2 and calls["fast"] > 3  # the slow one ran its warm-up only
    assert timed["slow"].median_ms >= 50 and len(timed["slow"].round_medians_ms) == 1
    assert not faster(timed["slow"].median_ms, timed["fast"].median_ms)


def test_a_fusion_stays_only_if_the_artifact_measured_faster_with_it(example_traced, tmp_path):
    (result,) = build(example_traced, BuildOptions(["host"], tmp_path, backend="onnxruntime"))
    manifest = json.loads((tmp_path / "example" / "host" / "manifest.json").read_text())
    (check,) = manifest["speed_checks"]
    assert check["rewrite"] == "fusion" and "interleaved rounds" in check["method"]
    assert check["with_ms"] > 0 and check["without_ms"] > 0
    assert check["kept"] == faster(check["with_ms"], check["without_ms"])
    if check["kept"]:
        assert manifest["fusion"].get("applied", True) and not manifest["fusion"].get("dropped")
    else:  # the shipped graph is the unfused one, and the manifest says why with both figures
        assert "measured no faster" in manifest["fusion"]["dropped"]
        assert manifest["fusion"]["applied"] is False


def test_a_target_with_several_backends_ships_the_fastest_verified_one(example_traced, tmp_path):
    (result,) = build(example_traced, BuildOptions(["x86-64-avx2"], tmp_path))
    manifest = json.loads((tmp_path / "example" / "x86-64-avx2" / "manifest.json").read_text())
    choice = manifest["backend_choice"]
    assert result.choice is not None and choice["chosen"] == result.backend == manifest["backend"]["name"]
    by_backend = {c["backend"]: c for c in choice["candidates"]}
    assert set(by_backend) == {"tvm", "onnxruntime", "executorch"}
    timed = {b: c["latency_ms"] for b, c in by_backend.items() if c["status"] == "verified"}
    assert all(v is not None for v in timed.values()) and len(timed) >= 2
    # the choice follows the figures: nothing it passed over beat it by more than the margin
    assert all(not faster(ms, timed[choice["chosen"]]) for ms in timed.values())
    assert "measured on this host" in by_backend[choice["chosen"]]["method"]
    # only the chosen artifact is shipped; the candidates' folders are gone
    assert sorted(p.name for p in (tmp_path / "example").iterdir()) == ["x86-64-avx2"]


def test_an_unreachable_target_chooses_among_the_candidates_verified_here(example_traced, tmp_path):
    (result,) = build(example_traced, BuildOptions(["arm64-cortex-a76"], tmp_path))
    choice = result.choice
    by_backend = {c.backend: c for c in choice.candidates}
    assert by_backend["tvm"].status == "not-run"  # a cross-compiled library: never chosen over a verified one
    assert choice.chosen in ("executorch", "onnxruntime") and result.numerics.proxy
    assert "as a proxy" in by_backend[choice.chosen].method
