"""int4 decoder weights chosen by perplexity: each method a backend offers is built, the lowest perplexity on
held-out text ships, and the manifest keeps every variant's figures; calibration prompts are checked first."""

from __future__ import annotations

import math

import numpy as np
import pytest

from compiler.build import BuildOptions, build
from compiler.cli.main import main
from compiler.frontend import load_model
from compiler.llm.perplexity import HeldOutText, perplexity
from targets.manifest import read_artifact


def test_perplexity_is_the_exponent_of_the_mean_next_token_loss():
    text = HeldOutText("test", ((1, 2, 3, 4),))
    assert perplexity(lambda ids: np.zeros((len(ids), 10)), text) == pytest.approx(10.0)
    sure = lambda ids: np.stack([np.eye(10)[min(i + 1, 9)] * 50 for i in ids])  # predicts each next id
    assert perplexity(sure, text) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("backend, target", [("onnxruntime", "host"), ("openvino", "intel-core-ultra-cpu")])
def test_calibrated_int4_beats_round_to_nearest_and_the_choice_is_recorded(stdlib_lm, code_prompts, tmp_path,
                                                                           backend, target):
    (result,) = build(load_model(stdlib_lm), BuildOptions([target], tmp_path, backend=backend, precision="int4",
                                                          samples=code_prompts))
    manifest = read_artifact(result.artifact).manifest
    choice = manifest.llm.weight_choice
    variants = {v["method"]: v for v in choice["variants"]}
    assert list(variants)[0] == "rtn" and len(variants) >= 3
    assert all(v["status"] == "verified" and v["perplexity"] > 1 for v in variants.values())
    float_ppl = choice["reference_perplexity"]
    assert 1 < float_ppl < load_model(stdlib_lm).spec.vocab_size / 5  # the model knows something
    calibrated = min(v["perplexity"] for m, v in variants.items() if m != "rtn" and "k_quant" not in m)
    assert float_ppl < variants["rtn"]["perplexity"] and calibrated < variants["rtn"]["perplexity"]
    assert variants[choice["chosen"]]["perplexity"] == min(v["perplexity"] for v in variants.values())
    assert "python-stdlib" in choice["calibration"] and "held-out" in choice["held_out"]
    scored = result.numerics.generation["perplexity"]
    assert scored["artifact"] == variants[choice["chosen"]]["perplexity"] and scored["reference"] == float_ppl
    assert math.isclose(scored["ratio"], scored["artifact"] / scored["reference"], rel_tol=1e-3)


def test_a_pinned_method_builds_only_that_one_on_the_users_prompts(stdlib_lm, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("def parse(text):\n    return [line.strip() for line in text.splitlines()]\n\n"
                       "class Queue:\n    def put(self, item, block=True, timeout=None):\n")
    (result,) = build(load_model(stdlib_lm), BuildOptions(["intel-core-ultra-cpu"], tmp_path / "out",
                                                          backend="openvino", precision="int4",
                                                          weight_method="awq+scale_estimation",
                                                          calibration=str(prompts)))
    manifest = read_artifact(result.artifact).manifest
    assert manifest.llm.weight_choice is None
    nncf = next(p for p in manifest.passes if p["name"] == "nncf.compress_weights")
    assert nncf["weight_method"] == "awq+scale_estimation" and nncf["samples"] == 4
    assert str(prompts) in nncf["calibration"]
    assert result.numerics.generation["perplexity"]["artifact"] > 1


@pytest.mark.parametrize("content, message", [
    (b"", "no calibration prompt (the file has no non-empty line)"),
    (b"a\nbc\n", "no calibration prompt of at least 4 tokens (2 shorter line(s))"),
    (b"def f(x):\n    return x + 1 # caf\xe9\n", "prompts.txt:2: not UTF-8 (byte 0xe9 at column 23)"),
])
def test_bad_calibration_prompts_are_named_before_any_work(stdlib_lm, tmp_path, capsys, content, message):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(content)
    out = tmp_path / "out"
    code = main(["build", str(stdlib_lm), "-t", "intel-core-ultra-cpu", "--precision", "int4",
                 "--calibration", str(prompts), "-o", str(out), "-q"])
    assert code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_a_weight_method_no_backend_offers_is_refused_with_the_ones_they_do(stdlib_lm, tmp_path, capsys):
    code = main(["build", str(stdlib_lm), "-t", "intel-core-ultra-cpu", "--precision", "int4",
                 "--weight-method", "hqq", "-o", str(tmp_path), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "--weight-method hqq" in err and "openvino: rtn, awq+scale_estimation" in err


def test_a_budget_no_int4_variant_meets_keeps_named_matmuls_in_int8(stdlib_lm, code_prompts, tmp_path, capsys):
    (result,) = build(load_model(stdlib_lm), BuildOptions(["intel-core-ultra-cpu"], tmp_path, backend="openvino",
                                                          precision="int4", samples=code_prompts,
                                                          accuracy_budget=0.3))
    assert result.status == "verified", result.message
    manifest = read_artifact(result.artifact).manifest
    choice = manifest.llm.weight_choice
    budget = choice["budget"]
    int4_only = [v for v in choice["variants"] if not v["int8_share"]]
    backups = [v for v in choice["variants"] if v["int8_share"]]
    assert len(int4_only) == 3 and backups and backups[-1]["int8_share"] == choice["int8_share"] > 0
    assert budget["int4_increase"] > 0.3 >= budget["increase"] and budget["met_by"].endswith("of the matmuls int8")
    assert budget["int8_layers"] and all("proj" in name for name in budget["int8_layers"])
    assert "int8" in manifest.llm.weight_precisions["matmuls"]
    ratio = result.numerics.generation["perplexity"]["ratio"]
    assert (ratio - 1) * 100 == pytest.approx(budget["increase"], abs=1e-2)
    capsys.readouterr()
    assert main(["inspect", result.artifact]) == 0
    shown = capsys.readouterr().out
    assert "accuracy budget 0.3" in shown and f"int4 alone {budget['int4_increase']}" in shown
    assert sum(line.lstrip().startswith("* ") for line in shown.splitlines()) == 1


def test_a_budget_a_pinned_int4_method_cannot_meet_fails_the_cell_and_says_why(stdlib_lm, tmp_path):
    (result,) = build(load_model(stdlib_lm), BuildOptions(["host"], tmp_path, backend="onnxruntime",
                                                          precision="int4", weight_method="rtn",
                                                          accuracy_budget=0.1))
    assert result.status == "error" and result.stage == "QUANTIZE" and not result.artifact
    assert "accuracy budget 0.1" in result.message and "only with awq+scale_estimation" in result.message
