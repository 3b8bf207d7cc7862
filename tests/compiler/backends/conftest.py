import pytest
from onnx import TensorProto, helper

from compiler.frontend.onnx_file import onnx_reference, signature_from_onnx
from targets.model import TracedModel


def single_op_model(op: str, dtype=TensorProto.FLOAT, opset: int = 17) -> TracedModel:
    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"], name=f"my_{op.lower()}")], "g",
        [helper.make_tensor_value_info("x", dtype, [1, 4])], [helper.make_tensor_value_info("y", dtype, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return TracedModel(name=op.lower(), source=f"<{op}>", source_kind="onnx", source_digest="0" * 64,
                       signature=signature_from_onnx(model), onnx_model=model, reference=onnx_reference(model))


@pytest.fixture
def single_op():
    return single_op_model


def at_precision(traced: TracedModel, precision: str, calibration=None, tmp_path=None) -> TracedModel:
    """The traced model with its ONNX graph rewritten as the build's precision stage does."""
    from dataclasses import replace

    from calibration.statistics import collect_ranges
    from compiler.passes.quantize import QuantSettings, quantize_int8, to_fp16

    if precision == "fp16":
        graph = to_fp16(traced.onnx_model)
    else:
        settings = QuantSettings("int8", "minmax", "uint8", "int8", per_channel=True)
        ranges = collect_ranges(traced.onnx_model, calibration, "minmax", tmp_path / "cache")
        graph = quantize_int8(traced.onnx_model, settings, ranges)
    return replace(traced, onnx_model=graph, graph_precision=precision)


def lower_for(backend, model, target, precision: str, workdir, calibration=None):
    """``backend.lower`` called as a build calls it: one `LowerJob` (its options resolved on this host; the
    calibration samples handed over where given)."""
    from compiler.build.lowering import make_job
    from targets.backend import BuildData
    from targets.host import detect_host
    from targets.request import BuildRequest, ModelSource

    data = (BuildData(tuple(calibration.samples), calibration.origin, calibration.is_random)
            if calibration is not None else BuildData())
    request = BuildRequest(ModelSource(model.source, model.name), target.id, precision=precision)
    return backend.lower(make_job(backend, model, target, precision, request, workdir, detect_host(), data))
