import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from calibration.readers import from_arrays
from compiler.backends.onnxruntime import backend
from compiler.errors import BuildError, UnsupportedOpError
from targets.host import detect_host
from tests.compiler.backends.conftest import at_precision, lower_for


def _run(tmp_path, lowered, target):
    return backend.plan_run(tmp_path, lowered.options, lowered.signature, target, detect_host())


def test_cpu_artifact_has_ep_config_and_ort_format_where_the_runtime_wants_it(conv_traced, registry, tmp_path):
    (tmp_path / "arm").mkdir()
    mobile = lower_for(backend, conv_traced, registry.get("arm64-cortex-a76"), "fp32", tmp_path / "arm")
    assert set(mobile.files) == {"model.onnx", "model.ort", "ep_config.json"}  # ONNX Runtime Mobile loads .ort
    target = registry.get("host")
    lowered = lower_for(backend, conv_traced, target, "fp32", tmp_path)
    assert set(lowered.files) == {"model.onnx", "ep_config.json"}  # a desktop loads model.onnx
    config = json.loads((tmp_path / "ep_config.json").read_text())
    assert config["execution_provider"] == "CPUExecutionProvider"
    assert lowered.signature.inputs[0].shape[0] == "batch"
    optimized = onnx.load(tmp_path / "model.onnx")
    assert "FusedConv" in {n.op_type for n in optimized.graph.node}  # extended optimization ran
    plan = _run(tmp_path, lowered, target)
    assert not plan.proxy
    x = np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32)
    got, want = plan.runner.run({"x": x}), conv_traced.reference({"x": x})
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5)


def test_qnn_artifact_is_qdq_with_provider_options_and_runs_as_proxy(example_traced, registry, tmp_path):
    target = registry.get("snapdragon-8gen3")
    calib = from_arrays({"image": example_traced.samples["image"]}, example_traced.signature, "bundled")
    model = at_precision(example_traced, "int8", calib, tmp_path)
    lowered = lower_for(backend, model, target, "int8", tmp_path)
    graph = onnx.load(tmp_path / "model.onnx")
    ops = {n.op_type for n in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert not any(op.startswith("Fused") or op.startswith("QLinear") for op in ops)
    config = json.loads((tmp_path / "ep_config.json").read_text())
    assert config["execution_provider"] == "QNNExecutionProvider"
    assert config["provider_options"]["backend_path"] == "libQnnHtp.so"
    plan = _run(tmp_path, lowered, target)
    assert plan.proxy and "QNNExecutionProvider" in plan.note
    images = example_traced.samples["image"][:16]
    got = next(iter(plan.runner.run({"image": images}).values()))
    want = next(iter(example_traced.reference({"image": images}).values()))
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.9


def test_fp16_artifact_holds_fp16_weights(conv_traced, registry, tmp_path):
    lowered = lower_for(backend, at_precision(conv_traced, "fp16"), registry.get("snapdragon-8gen3"), "fp16", tmp_path)
    graph = onnx.load(tmp_path / "model.onnx")
    assert any(t.data_type == TensorProto.FLOAT16 for t in graph.graph.initializer)
    assert lowered.signature.inputs[0].dtype == "float32"  # I/O kept fp32


def test_graph_at_another_precision_is_refused(conv_traced, registry, tmp_path):
    with pytest.raises(BuildError, match="lowers the int8 graph, but was given a fp32 one"):
        lower_for(backend, conv_traced, registry.get("host"), "int8", tmp_path)


def test_unsupported_op_names_node_and_op(single_op, registry, tmp_path):
    with pytest.raises(UnsupportedOpError, match=r"cannot lower op 'Abs' \(node 'my_abs'\)"):
        lower_for(backend, single_op("Abs", TensorProto.BFLOAT16), registry.get("host"), "fp32", tmp_path)


def test_precision_rewrites_leave_the_float_graph_untouched(block_traced):
    from compiler.passes.quantize import QuantSettings, quantize_int4, to_fp16

    before = block_traced.onnx_model.SerializeToString()
    quantize_int4(block_traced.onnx_model, QuantSettings("int4", block_size=32))
    to_fp16(block_traced.onnx_model)
    assert block_traced.onnx_model.SerializeToString() == before
