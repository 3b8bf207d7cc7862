import json

import pytest

from compiler.backends.executorch import backend
from compiler.build import BuildOptions, build
from compiler.errors import BuildError
from compiler.frontend import concretize, load_model
from targets.host import detect_host
from tests.compiler.backends.conftest import lower_for


def test_the_arm_program_is_an_xnnpack_pte_that_verifies_here_as_a_labelled_proxy(example_traced, registry, tmp_path):
    target = registry.get("arm64-cortex-a76")
    lowered = lower_for(backend, concretize(example_traced), target, "fp32", tmp_path)
    assert lowered.files == ("model.pte",) and (tmp_path / "model.pte").stat().st_size > 0
    assert lowered.structure["delegate_calls"] >= 1
    plan = backend.plan_run(tmp_path, lowered.options, lowered.signature, target, detect_host())
    assert plan.proxy and "same model.pte" in plan.note
    # through the build: the very file the board loads, verified against the float reference on this CPU
    (result,) = build(example_traced, BuildOptions(["arm64-cortex-a76"], tmp_path / "out", backend="executorch"))
    assert result.status == "verified" and result.numerics.proxy, result.message
    assert result.numerics.min_cosine > 0.99999


def test_int8_uses_xnnpacks_quantizer_and_verifies(example_traced, tmp_path):
    (fp32,) = build(example_traced, BuildOptions(["arm64-cortex-a76"], tmp_path / "fp32", backend="executorch",
                                                 measure_latency=False))
    (int8,) = build(example_traced, BuildOptions(["arm64-cortex-a76"], tmp_path / "int8", backend="executorch",
                                                 precision="int8", measure_latency=False))
    assert int8.status == "verified", int8.message
    manifest = json.loads((tmp_path / "int8" / "example" / "arm64-cortex-a76" / "manifest.json").read_text())
    pt2e = next(p for p in manifest["passes"] if p["name"] == "quantize-int8-pt2e")
    assert "XNNPACKQuantizer" in pt2e["tool"]
    assert int8.size_bytes < fp32.size_bytes / 2  # int8 weights in the program
    assert manifest["quantization"]["accuracy"]["agreement_with_float_pct"] >= 90


def test_onnx_source_is_refused_with_a_way_forward(conv_onnx, registry, tmp_path):
    model = load_model(conv_onnx)
    with pytest.raises(BuildError, match=r"lowers torch programs.*\.pt2"):
        lower_for(backend, concretize(model), registry.get("arm64-cortex-a76"), "fp32", tmp_path)
