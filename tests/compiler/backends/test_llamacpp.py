"""llama.cpp backend: GGUF files from llama.cpp's own converter and quantizer, verified by generating through llama.cpp."""

from __future__ import annotations

import json
import subprocess

import pytest

from compiler.backends.llamacpp import GGUF, backend
from compiler.build import BuildContext, BuildOptions, build
from compiler.errors import UsageError
from compiler.frontend import load_model
from targets.errors import TargetError
from targets.manifest import read_artifact
from targets.registry import target_registry
from targets.spec import load_spec
from tests.targets.test_spec import SPECS


def _host_with(**llamacpp_options) -> BuildContext:
    spec = load_spec(SPECS / "host.toml", {"id": "host-gguf", "backend_options": {"llamacpp": llamacpp_options}})
    return BuildContext(targets=target_registry().including({"host-gguf": spec}, "test"))


@pytest.mark.parametrize("family", ["llama", "qwen2", pytest.param("qwen3", marks=pytest.mark.slow),
                                    pytest.param("mistral", marks=pytest.mark.slow)])
def test_each_family_generates_the_reference_tokens(family_dirs, tmp_path, family):
    (result,) = build(load_model(family_dirs[family]), BuildOptions(["host"], tmp_path, backend="llamacpp"))
    assert result.status == "verified", result.message
    generation = result.numerics.generation
    assert generation["greedy_equal"] and generation["token_agreement"] == 1.0
    manifest = read_artifact(result.artifact).manifest
    assert manifest.files[GGUF].bytes > 0 and manifest.llm.runtime == "llama.cpp"
    assert manifest.llm.weight_precisions["matmuls"] == "fp32 (F32)"
    assert manifest.toolchain["llama-cpp-python"] == "0.3.36"


# Q4_K_M: k-quant super-blocks of 256; llama.cpp falls back to Q5_0 for the tensors whose rows are shorter (this
# model's width is 128), and the manifest says so tensor class by tensor class
@pytest.mark.parametrize("precision, kind, label", [("int8", "Q8_0", "int8 (Q8_0)"),
                                                    ("int4", "Q4_K_M", "int5 (Q5_0) + Q4_K")])
def test_quantized_ggufs_keep_the_trained_models_predictions(trained_dir, tmp_path, precision, kind, label):
    (result,) = build(load_model(trained_dir), BuildOptions(["host"], tmp_path, backend="llamacpp",
                                                            precision=precision))
    assert result.status == "verified", result.numerics.reason
    manifest = read_artifact(result.artifact).manifest
    assert manifest.backend.options["gguf_type"] == kind
    assert manifest.llm.weight_precisions["matmuls"].startswith(label)
    quantize = next(p for p in manifest.passes if p["name"] == "llama.cpp llama_model_quantize")
    assert quantize["type"] == kind and sum(quantize["tensor_types"]["matmuls"].values()) == 2 * 7
    fp32_bytes = load_model(trained_dir).spec.parameters * 4
    assert manifest.files[GGUF].bytes < fp32_bytes * (0.45 if precision == "int8" else 0.35)


def test_the_gguf_loads_in_llama_cpp_as_an_app_loads_it(family_dirs, tmp_path):
    (result,) = build(load_model(family_dirs["llama"]), BuildOptions(["host"], tmp_path, backend="llamacpp"))
    model = load_model(family_dirs["llama"])
    ids = model.encode("Once upon a time")
    reference, _ = model.reference_greedy(ids, 8, stop=())
    script = ("import itertools, json, sys, llama_cpp\n"
              "llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=64, verbose=False)\n"
              "ids = llm.tokenize(b'Once upon a time', add_bos=False)\n"
              "new = list(itertools.islice(llm.generate(ids, top_k=1, temp=0.0), 8))\n"
              "print(json.dumps([ids, new]))\n")
    python = backend.environment_state().python_exe
    done = subprocess.run([str(python), "-c", script, str(tmp_path / "llama" / "host" / GGUF)], capture_output=True,
                          text=True, check=True)
    prompt, produced = json.loads(done.stdout.strip().splitlines()[-1])
    assert prompt == ids  # llama.cpp's own tokenizer, read from the GGUF
    assert produced == reference


def test_an_int4_type_the_runtime_does_not_run_is_refused_with_the_ones_it_does(family_dirs, tmp_path):
    with pytest.raises(TargetError, match="int4_type = 'Q3_K'; choose one of Q4_K_M, Q4_0"):
        build(load_model(family_dirs["llama"]), BuildOptions(["host-gguf"], tmp_path, backend="llamacpp"),
              _host_with(int4_type="Q3_K"))
    assert not (tmp_path / "llama").exists()


def test_a_missing_toolchain_is_named_with_its_install_command(family_dirs, tmp_path, monkeypatch):
    monkeypatch.setenv("CHIPFIT_TOOLCHAINS_DIR", str(tmp_path / "no-toolchains"))
    with pytest.raises(UsageError, match="chipfit toolchain install llamacpp"):
        build(load_model(family_dirs["llama"]), BuildOptions(["host"], tmp_path, backend="llamacpp"))
    assert not (tmp_path / "llama").exists()
