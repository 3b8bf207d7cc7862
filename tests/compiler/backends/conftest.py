import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compiler.frontend.onnx_file import onnx_reference, signature_from_onnx
from compiler.traced import TracedModel


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
