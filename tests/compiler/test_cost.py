from onnx import TensorProto, helper, numpy_helper
import numpy as np

from compiler.passes.cost import graph_cost


def test_conv_and_gemm_count_macs_twice():
    w = numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "w")
    g = numpy_helper.from_array(np.zeros((10, 8), np.float32), "g")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("GlobalAveragePool", ["c"], ["p"], name="pool"),
         helper.make_node("Flatten", ["p"], ["f"], name="flat"),
         helper.make_node("Gemm", ["f", "g"], ["y"], name="fc", transB=1)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])], [w, g])
    cost = graph_cost(helper.make_model(graph))
    by_name = {n.node: n for n in cost.nodes}
    assert by_name["conv"].ops == 2 * (8 * 16 * 16) * (3 * 3 * 3)
    assert by_name["fc"].ops == 2 * 10 * 8
    assert by_name["conv"].weight_bytes == 8 * 3 * 3 * 3 * 4
    assert "flat" not in by_name  # a free op
    assert cost.total_ops == sum(n.ops for n in cost.nodes)


def test_example_costs_are_recorded_in_int8_as_int8(example_traced):
    from calibration.readers import from_arrays
    from tests.compiler.backends.conftest import at_precision
    import tempfile, pathlib

    calib = from_arrays({"image": example_traced.samples["image"]}, example_traced.signature, "bundled")
    with tempfile.TemporaryDirectory() as tmp:
        int8 = at_precision(example_traced, "int8", calib, pathlib.Path(tmp))
    dtypes = {n.op: n.compute_dtype for n in graph_cost(int8.onnx_model, "int8").nodes if n.op in ("Conv", "Gemm")}
    assert dtypes == {"Conv": "int8", "Gemm": "int8"}
    assert graph_cost(example_traced.onnx_model).total_ops > 100_000
