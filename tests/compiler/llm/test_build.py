"""Decoder LMs built per chip and verified by generating text against transformers, token for token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compiler.backends.tvm.lower import elf_machine
from compiler.build import BuildOptions, build
from compiler.frontend import load_model
from compiler.speed import faster
from targets.manifest import read_artifact

from compiler.llm.synthetic import FAMILIES


def _by_backend(results):
    return {r.backend: r for r in results}


#: the families whose layouts differ (plain GQA; sliding-window layers; MLA, which only TVM lowers) run by default;
#: the others are the same code paths with other configs, a sweep run with ``pytest -m slow``
DEFAULT_FAMILIES = ("llama", "gemma3_text", "minicpm3")


@pytest.mark.parametrize("family", [f if f in DEFAULT_FAMILIES else pytest.param(f, marks=pytest.mark.slow)
                                    for f in FAMILIES])
def test_every_family_generates_the_reference_tokens_on_host(family_dirs, tmp_path, family):
    results = _by_backend(build(load_model(family_dirs[family]), BuildOptions(["host"], tmp_path)))
    # ONNX Runtime GenAI's builder has no MiniCPM3; TVM and OpenVINO lower every family; llama.cpp the ones it is
    # verified on
    expected = ({"tvm", "openvino"} | ({"onnxruntime"} if family != "minicpm3" else set())
                | ({"llamacpp"} if family in ("llama", "qwen2", "qwen3", "mistral") else set()))
    assert set(results) == expected
    for backend, r in results.items():
        assert r.status == "verified", (backend, r.message, r.numerics and r.numerics.reason)
        generation = r.numerics.generation
        assert generation["greedy_equal"] and generation["token_agreement"] == 1.0
        assert all(p["matched"] >= 1 for p in generation["prompts"])
    if "onnxruntime" in results:
        folder = Path(results["onnxruntime"].artifact)
        config = json.loads((folder / "genai_config.json").read_text())
        assert config["model"]["decoder"]["inputs"]["past_key_names"] == "past_key_values.%d.key"
        manifest = read_artifact(folder).manifest
        assert manifest.llm.runtime == "onnxruntime-genai" and manifest.llm.cache_form == "dynamic"


def test_the_genai_folder_loads_in_onnxruntime_genai_as_it_is(family_dirs, tmp_path, monkeypatch):
    import numpy as np
    import onnxruntime_genai as og

    # a relative output folder, as `-o build/` gives: the builder's child process runs in a scratch folder
    monkeypatch.chdir(tmp_path)
    (result,) = build(load_model(family_dirs["qwen2"]), BuildOptions(["host"], "out", backend="onnxruntime"))
    assert result.status == "verified", result.message
    folder = tmp_path / "out" / "qwen2" / "host"
    model = og.Model(str(folder))  # no overlay, no edits: as a deployed app loads it
    tokenizer = og.Tokenizer(model)
    ids = tokenizer.encode("Once upon a time")
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + 8, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.asarray([ids], dtype=np.int32))
    while not generator.is_done():
        generator.generate_next_token()
    reference, _ = load_model(family_dirs["qwen2"]).reference_greedy(list(ids), 8, stop=(1,))
    assert list(generator.get_sequence(0))[len(ids):] == reference


@pytest.mark.parametrize("precision", ["int4", "int8"])
def test_quantized_decoders_keep_the_trained_models_predictions(trained_dir, tmp_path, precision):
    (result,) = build(load_model(trained_dir), BuildOptions(["host"], tmp_path, backend="onnxruntime",
                                                            precision=precision))
    assert result.status == "verified", result.numerics.reason
    generation = result.numerics.generation
    assert generation["token_agreement"] >= generation["required_agreement"]
    manifest = read_artifact(result.artifact).manifest
    assert manifest.llm.weight_precisions["matmuls"] == precision
    fp32_bytes = load_model(trained_dir).spec.parameters * 4
    assert manifest.llm.memory_plan.weight_bytes < fp32_bytes * (0.45 if precision == "int8" else 0.35)


def test_a_quantized_artifact_far_from_the_reference_fails_with_its_figures(family_dirs, tmp_path):
    # random weights: int4 rounding moves near-equal logits, so teacher-forced agreement drops below the bar
    (result,) = build(load_model(family_dirs["llama"]), BuildOptions(["host"], tmp_path, backend="onnxruntime",
                                                                     precision="int4"))
    assert result.status == "failed" and "min_token_agreement" in result.numerics.reason
    assert (tmp_path / "llama" / "host.failed" / "manifest.json").is_file()


def test_core_ml_gets_a_stateful_program_with_prefill_and_decode(trained_dir, tmp_path):
    (result,) = build(load_model(trained_dir), BuildOptions(["apple-a17"], tmp_path, precision="int8",
                                                            backend="coreml"))
    assert result.status == "not-run" and "macOS" in result.numerics.reason
    structure = read_artifact(result.artifact).manifest.numerics.structure
    assert structure["functions"] == ["decode", "prefill"]
    assert len(structure["states"]) == 2 * 2 and structure["state_ops"]["decode"]["write_state"] == 4
    assert structure["compressed_weight_dtypes"] == ["INT8"]


def test_arm_gets_a_cross_linked_decoder_library_and_npus_a_static_form(trained_dir, tmp_path):
    model = load_model(trained_dir)
    (arm,) = build(model, BuildOptions(["arm64-cortex-a76"], tmp_path, backend="tvm"))
    assert arm.status == "not-run" and elf_machine(tmp_path / "tiny-story" / "arm64-cortex-a76" / "decoder.so") == "aarch64"
    # the ONNX Runtime folder for QNN's provider carries the static programs an NPU provider compiles
    # (the QNN backend's own w8a16 context binary: tests/compiler/backends/test_qnn.py)
    (npu,) = build(model, BuildOptions(["snapdragon-8gen3"], tmp_path, backend="onnxruntime"))
    assert npu.status == "verified" and npu.numerics.proxy and npu.backend == "onnxruntime"
    llm = read_artifact(npu.artifact).manifest.llm
    (static,) = llm.other_forms
    assert static["name"] == "static" and static["numerics"]["status"] == "verified"
    assert (tmp_path / "tiny-story" / "snapdragon-8gen3" / "static" / "prefill.onnx").is_file()


def test_the_host_ships_its_fastest_decoder_runtime_with_the_others_beside_it(trained_dir, tmp_path):
    results = _by_backend(build(load_model(trained_dir), BuildOptions(["host"], tmp_path)))
    assert set(results) == {"onnxruntime", "tvm", "llamacpp", "openvino"}
    chosen = next(r for r in results.values() if r.choice is not None)
    assert Path(chosen.artifact) == tmp_path / "tiny-story" / "host"
    for name, r in results.items():
        assert r.status == "verified"
        if r is not chosen:
            assert Path(r.artifact) == tmp_path / "tiny-story" / f"host@{name}"
    manifest = read_artifact(chosen.artifact).manifest
    candidates = manifest.backend_choice.candidates
    assert [c.backend for c in candidates] == ["onnxruntime", "tvm", "llamacpp", "openvino"]
    for c in candidates:  # every runtime timed on one typical turn, with its time to first token and decode rate
        assert c.latency_ms > 0 and c.figures["ttft_ms"] > 0 and c.figures["decode_tok_s"] > 0
        assert c.figures["prompt_tokens"] == 128 and "interleaved rounds" in c.method
    best = candidates[0]
    for c in candidates[1:]:  # the race's rule: a later backend wins only by more than the noise margin
        best = c if faster(c.latency_ms, best.latency_ms) else best
    assert manifest.backend_choice.chosen == best.backend == manifest.backend.name
    assert not (tmp_path / "tiny-story" / ".candidates").exists()
