"""Executions that compute what a chip computes: QDQ semantics and the x86 int16-pair emulation."""

import numpy as np
import onnx
import pytest

from calibration import compare_outputs
from calibration.readers import from_arrays
from calibration.statistics import collect_ranges
from compiler.arithmetic import EMULATED, NATIVE, QDQ, execution_for, run_as, saturation_exposed
from compiler.passes.quantize import QuantSettings, quantize_int8
from targets.host import detect_host
from targets.isa import EXACT, X86_PAIRS


@pytest.fixture(scope="module")
def digits_int8(example_traced, tmp_path_factory):
    """The example digits net quantized U8S8 at full range and with 7-bit weights, and its inputs."""
    name = example_traced.signature.inputs[0].name
    inputs = {name: example_traced.samples[name][:32]}
    calibration = from_arrays(inputs, example_traced.signature, "test")
    cache = tmp_path_factory.mktemp("ranges")
    graphs = {}
    for label, seven in (("full", False), ("7bit", True)):
        settings = QuantSettings("int8", "minmax", "uint8", "int8", per_channel=True, reduce_range=seven)
        ranges = collect_ranges(example_traced.onnx_model, calibration, "minmax", cache)
        graphs[label] = quantize_int8(example_traced.onnx_model, settings, ranges)
    return graphs, inputs


def _cosine(a, b) -> float:
    return min(e.cosine for e in compare_outputs(a, b))


def test_pair_saturation_is_exposed_only_by_full_range_weights(digits_int8):
    graphs, _ = digits_int8
    assert saturation_exposed(graphs["full"]) and not saturation_exposed(graphs["7bit"])
    assert execution_for(graphs["full"], EXACT, X86_PAIRS) == QDQ
    assert execution_for(graphs["full"], X86_PAIRS, EXACT) == EMULATED
    assert execution_for(graphs["full"], X86_PAIRS, X86_PAIRS) == NATIVE
    assert execution_for(graphs["7bit"], X86_PAIRS, EXACT) == NATIVE  # exact on both: run as loaded


def test_the_emulation_clips_full_range_u8s8_and_leaves_7bit_weights_exact(digits_int8):
    graphs, inputs = digits_int8
    qdq = run_as(graphs["full"], inputs, QDQ)
    assert _cosine(qdq, run_as(graphs["full"], inputs, EMULATED)) < 0.99  # the int16 pair sums clip
    seven = run_as(graphs["7bit"], inputs, QDQ)
    emulated = run_as(graphs["7bit"], inputs, EMULATED)
    assert all(np.array_equal(seven[k], emulated[k]) for k in seven)


def test_this_host_computes_what_its_own_arithmetic_says(digits_int8):
    """On an AVX2 host ONNX Runtime's kernels give the emulation's numbers; on a VNNI (or Arm) host, QDQ's."""
    graphs, inputs = digits_int8
    native = run_as(graphs["full"], inputs, NATIVE)
    own = EMULATED if detect_host().isa.int8_arithmetic == X86_PAIRS else QDQ
    expected = run_as(graphs["full"], inputs, own)
    assert _cosine(expected, native) > 0.9999
    assert max(np.abs(expected[k] - native[k]).max() for k in native) < 0.05


def test_int8_activations_are_shifted_to_uint8_and_clip_alike(example_traced, tmp_path):
    name = example_traced.signature.inputs[0].name
    inputs = {name: example_traced.samples[name][:16]}
    calibration = from_arrays(inputs, example_traced.signature, "test")
    settings = QuantSettings("int8", "minmax", "int8", "int8", per_channel=True)
    graph = quantize_int8(example_traced.onnx_model, settings,
                          collect_ranges(example_traced.onnx_model, calibration, "minmax", tmp_path,
                                         activation_dtype="int8"))
    assert isinstance(graph, onnx.ModelProto) and saturation_exposed(graph)
    assert _cosine(run_as(graph, inputs, QDQ), run_as(graph, inputs, EMULATED)) < 0.99
