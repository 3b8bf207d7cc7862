"""ONNX's node suite through chipfit's artifacts: a sample in CI, every case in the `slow` sweep; an ONNX Runtime
target loses no case the runtime passes when run directly."""

import pytest

from compiler.node_suite import lost_cases, node_case_names, sweep

#: a fast sample across op families (elementwise, reductions, shapes, conv, control of dtypes, training ops)
SAMPLE = ("test_abs", "test_adagrad", "test_add_bcast", "test_argmax_default_axis_example", "test_cast_FLOAT_to_DOUBLE",
          "test_clip_default_inbounds", "test_concat_3d_axis_1", "test_conv_with_autopad_same", "test_cumsum_1d",
          "test_gather_0", "test_gemm_all_attributes", "test_layer_normalization_4d_axis1", "test_reduce_sum_keepdims_example",
          "test_reshape_negative_dim", "test_resize_upsample_scales_linear", "test_slice", "test_softmax_large_number",
          "test_string_concat", "test_top_k", "test_where_long_example")


def test_a_sample_of_the_node_suite_loses_no_case_the_runtime_passes():
    assert set(SAMPLE) <= set(node_case_names())
    (report,) = sweep("host", "onnxruntime", names=SAMPLE, budget_s=120)
    data = report.to_dict()
    assert data["total"] == len(SAMPLE) and data["backends"] == ["onnxruntime"]
    assert lost_cases(data) == [], data["notes"]
    assert all(o["stage"] for o in data["outcomes"] if not o["passed"])  # every failure is a named stage
    assert "run directly" in data["notes"][0] and len(data["runtime_direct"]) == len(SAMPLE)


def test_a_case_over_its_budget_is_killed_and_the_sweep_goes_on():
    (report,) = sweep("host", "onnxruntime", names=("test_abs", "test_acos"), budget_s=0.001, direct=False)
    assert [(o.item, o.passed) for o in report.outcomes] == [("test_abs", False), ("test_acos", False)]
    assert all("budget (killed)" in o.message and o.stage for o in report.outcomes)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "tvm"])
def test_the_whole_node_suite(backend):
    (report,) = sweep("host", backend, budget_s=60)
    data = report.to_dict()
    assert data["total"] == len(node_case_names())
    assert all(o["stage"] for o in data["outcomes"] if not o["passed"])
    if backend == "onnxruntime":
        assert lost_cases(data) == [], data["notes"]
