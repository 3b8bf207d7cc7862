"""``--kv-cache``: the KV cache's element type where the decoder runtime offers one, in the artifact, its memory
plan and its verification; a backend without the choice is left out, or refused when it is the only one."""

from __future__ import annotations

import json
from pathlib import Path

from compiler.build import BuildOptions, build
from compiler.cli.main import main
from compiler.frontend import load_model
from targets.manifest import read_artifact


def _built(stdlib_lm, samples, tmp_path, target, backend, kv_cache, **settings):
    model = load_model(stdlib_lm)
    (result,) = build(model, BuildOptions([target], tmp_path, backend=backend, kv_cache=kv_cache, samples=samples,
                                          measure_latency=False, **settings))
    assert result.status == "verified", result.message
    manifest = read_artifact(result.artifact).manifest
    plan = manifest.llm.memory_plan
    assert plan.kv_cache_bytes == model.spec.kv_bytes(plan.context, plan.kv_bytes_per_element)
    assert result.numerics.generation["perplexity"]["artifact"] > 1
    return result, manifest


def test_openvino_writes_the_asked_kv_cache_precision_for_the_application(stdlib_lm, code_prompts, tmp_path):
    result, manifest = _built(stdlib_lm, code_prompts, tmp_path, "intel-core-ultra-cpu", "openvino", "fp16", precision="int4",
                              weight_method="rtn")
    config = json.loads((Path(result.artifact) / "ov_config.json").read_text())
    assert config["config"]["KV_CACHE_PRECISION"] == "f16"
    assert manifest.llm.memory_plan.kv_bytes_per_element == 2  # u8 (1 byte) without --kv-cache at int4


def test_llama_cpp_runs_a_q8_0_kv_cache(stdlib_lm, code_prompts, tmp_path):
    result, manifest = _built(stdlib_lm, code_prompts, tmp_path, "host", "llamacpp", "int8", precision="int8")
    assert manifest.backend.options["cache_type"] == "Q8_0"
    assert manifest.llm.memory_plan.kv_bytes_per_element == 34 / 32
    assert "Q8_0 KV cache" in result.numerics.runner


def test_a_kv_cache_type_the_only_backend_cannot_write_is_refused_before_any_work(stdlib_lm, tmp_path, capsys):
    code = main(["build", str(stdlib_lm), "-t", "host", "--backend", "onnxruntime", "--kv-cache", "int8",
                 "-o", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "--kv-cache int8" in err
    assert not (tmp_path / "out").exists()
