"""`chipfit plan`: a decoder's memory plan and estimated TTFT, rates and J/token per target, from its config alone
or a model folder's config and safetensors headers, with nothing loaded or built."""

import json
from pathlib import Path

import pytest

from compiler.build import BuildOptions, build
from compiler.cli import main
from compiler.frontend import load_model
from profiles.profile import ProfileOptions, profile_artifacts

#: the published configs' values of three sizes people put on boards and phones
SHAPES = {
    "qwen2.5-0.5b": dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=896,
                         intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         vocab_size=151936, max_position_embeddings=32768, tie_word_embeddings=True),
    "llama-3.2-1b": dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=2048,
                         intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                         head_dim=64, vocab_size=128256, max_position_embeddings=131072, tie_word_embeddings=True),
    "qwen2.5-3b": dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=2048,
                       intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
                       vocab_size=151936, max_position_embeddings=32768, tie_word_embeddings=True),
}
#: their published parameter counts
PARAMETERS = {"qwen2.5-0.5b": 494e6, "llama-3.2-1b": 1.24e9, "qwen2.5-3b": 3.09e9}


def _config(tmp_path: Path, name: str, **edits) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**SHAPES[name], **edits}))
    return folder / "config.json"


def _plan(capsys, *args) -> dict:
    assert main(["plan", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_config_alone_gives_every_targets_memory_plan_and_estimates(tmp_path, capsys):
    for name in SHAPES:
        plan = _plan(capsys, str(_config(tmp_path, name)), "-t", "all", "--precision", "int4")
        # within 1.5 % of the published count: the shapes of a standard decoder layer, from config.json
        assert abs(plan["parameters"] / PARAMETERS[name] - 1) < 0.015, name
        assert plan["parameters_from"].startswith("config.json")
        rows = {r["target"]: r for r in plan["targets"]}
        assert {"apple-a17", "intel-npu-3720"} <= set(plan["skipped"])  # they run no int4: listed, not planned
        for target, row in rows.items():
            assert row["memory_plan"]["weight_bytes"] > 0 and row["context"] > 0
            # a decode rate where the spec knows its bandwidth; else exactly that figure named as missing
            assert row["decode_tok_s"] or any(m.startswith("memory_bandwidth_gbs") for m in row["missing"]), target
            assert row["j_per_token"] > 0 and row["inputs"]["energy_basis"]
    pi = rows["arm64-cortex-a76"]  # the 3B on a Pi 5: its bandwidth and power measured elsewhere, labelled
    assert pi["decode_tok_s"] and pi["inputs"]["energy_basis"].startswith("power under load 6.37 W")


def test_the_plan_is_the_estimate_a_build_gets(family_dirs, tmp_path, capsys):
    model = load_model(family_dirs["llama"])
    (result,) = build(model, BuildOptions(["arm64-cortex-a76"], tmp_path / "b", backend="onnxruntime",
                                          measure_latency=False))
    assert result.status == "verified", result.message
    plan = _plan(capsys, str(family_dirs["llama"]), "-t", "arm64-cortex-a76", "--precision", "fp32")
    (row,) = plan["targets"]
    manifest = json.loads((Path(result.artifact) / "manifest.json").read_text())
    built = manifest["llm"]["memory_plan"]
    assert row["context"] == built["context"] and row["memory_plan"]["kv_cache_bytes"] == built["kv_cache_bytes"]
    (profile,) = profile_artifacts(result.artifact, ProfileOptions(runs=3, min_runs=1, warmup=0,
                                                                          prompt_lengths=(128,), new_tokens=8)).profiles
    estimate = profile.llm["estimate"]
    # the same estimator on the same figures: the build counts its files' bytes, the plan the checkpoint's shapes,
    # and that difference in weight bytes, read at the same bandwidth, is all that separates the two step times
    ours, theirs = row["inputs"], estimate["inputs"]
    assert (ours["bandwidth_gbs"], ours["bandwidth_efficiency"]) == (theirs["bandwidth_gbs"],
                                                                     theirs["bandwidth_efficiency"])
    read = ours["bandwidth_gbs"] * 1e9 * ours["bandwidth_efficiency"]
    assert 1 / row["decode_tok_s"] - 1 / estimate["decode_tok_s"] == pytest.approx(
        (ours["weight_bytes"] - theirs["weight_bytes"]) / read, rel=1e-6)
    assert row["inputs"]["energy_basis"] == theirs["energy_basis"]


@pytest.mark.parametrize("edit, args, expected", [
    ({"model_type": "no-such-lm", "architectures": ["NoSuchLM"]}, (), "is no causal language model"),
    ({}, ("--context", "100000"), "handles at most 32768 positions"),
    ({}, ("--precision", "int4", "-t", "apple-a17"), "runs fp16, fp32, int8, not int4"),
])
def test_bad_input_is_refused_with_what_to_change(tmp_path, capsys, edit, args, expected):
    config = _config(tmp_path, "qwen2.5-0.5b", **edit)
    targets = () if "-t" in args else ("-t", "host")
    assert main(["plan", str(config), *targets, *args]) == 2
    assert expected in capsys.readouterr().err
