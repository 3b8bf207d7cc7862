"""Cost analysis of an ONNX graph: operations and bytes moved, per node, at batch 1.

An analysis, not a rewrite: the build records the result (`targets.cost.GraphCost`) in each artifact's manifest so the
profiler's estimate model can work on artifacts whose files hold no ONNX (a TVM library, a Core
ML package). One multiply-accumulate counts as two operations, as datasheets count them.
"""

from __future__ import annotations

import numpy as np
import onnx

from compiler.passes.graph import copy_model
from targets.cost import GraphCost, NodeCost

_ELEMENT_BYTES = {
    onnx.TensorProto.FLOAT: 4, onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.BFLOAT16: 2, onnx.TensorProto.DOUBLE: 8,
    onnx.TensorProto.INT8: 1, onnx.TensorProto.UINT8: 1, onnx.TensorProto.INT16: 2, onnx.TensorProto.UINT16: 2,
    onnx.TensorProto.INT32: 4, onnx.TensorProto.INT64: 8, onnx.TensorProto.BOOL: 1,
}
#: Ops whose cost is their multiply-accumulates; everything else costs one op per output element.
MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "MatMulNBits", "MatMulInteger", "QLinearConv", "QLinearMatMul",
           "FusedConv", "FusedGemm", "FusedMatMul")
#: Ops that move or reinterpret data without arithmetic.
FREE_OPS = ("Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Shape", "Constant", "Cast")


def _static(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = copy_model(model)
    for value in list(copy.graph.input) + list(copy.graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
    del copy.graph.value_info[:]
    try:
        return onnx.shape_inference.infer_shapes(copy, data_prop=True)
    except Exception:
        return copy


def graph_cost(model: onnx.ModelProto, precision: str = "fp32", shapes_from: onnx.ModelProto | None = None) -> GraphCost:
    """Per-node cost with every symbolic dim at 1. Nodes whose shapes are unknown count their known parts.

    ONNX shape inference does not know contrib ops (FusedConv, SkipLayerNormalization...): pass the
    graph before fusion as ``shapes_from`` and the tensors both graphs share take their shapes from it.
    """
    inferred = _static(model)
    shapes: dict[str, tuple[list[int], int]] = {}
    values = list(_static(shapes_from).graph.value_info) if shapes_from is not None else []
    for value in values + list(inferred.graph.input) + list(inferred.graph.output) + list(inferred.graph.value_info):
        t = value.type.tensor_type
        if t.HasField("shape"):
            shapes[value.name] = ([d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim], t.elem_type)
    weights = {}
    for init in inferred.graph.initializer:
        shapes[init.name] = (list(init.dims), init.data_type)
        weights[init.name] = int(np.prod(init.dims)) * _ELEMENT_BYTES.get(init.data_type, 4)
    quantized_inputs = {n.output[0] for n in inferred.graph.node if n.op_type == "DequantizeLinear"}

    def size(name: str) -> int:
        if name not in shapes:
            return 0
        dims, dtype = shapes[name]
        return int(np.prod(dims)) * _ELEMENT_BYTES.get(dtype, 4)

    def numel(name: str) -> int:
        return int(np.prod(shapes[name][0])) if name in shapes else 0

    nodes = []
    for node in inferred.graph.node:
        if node.op_type in FREE_OPS:
            continue
        outputs = [o for o in node.output if o]
        weight = sum(weights.get(i, 0) for i in node.input)
        moved = sum(size(i) for i in node.input if i) + sum(size(o) for o in outputs)
        ops = _mac_ops(node, shapes) if node.op_type in MAC_OPS else sum(numel(o) for o in outputs)
        dtype = "fp32"
        if node.op_type in MAC_OPS:
            if precision == "int8" and (any(i in quantized_inputs for i in node.input) or node.op_type.startswith("QLinear")):
                dtype = "int8"
            elif precision == "fp16":
                dtype = "fp16"
        nodes.append(NodeCost(node.name or outputs[0], node.op_type, int(ops), int(moved), int(weight), dtype))
    return GraphCost.of(nodes)


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return a.i
    return default


def _mac_ops(node: onnx.NodeProto, shapes) -> int:
    def dims(i: int) -> list[int]:
        name = node.input[i] if i < len(node.input) else ""
        return shapes.get(name, ([], 0))[0]

    out = shapes.get(node.output[0], ([], 0))[0]
    op = node.op_type
    if op in ("Conv", "QLinearConv", "ConvTranspose", "FusedConv"):
        w = dims(3 if op == "QLinearConv" else 1)
        if not w or not out:
            return 0
        group = _attr(node, "group", 1)
        per_output = int(np.prod(w[1:])) if op != "ConvTranspose" else int(np.prod(w[2:])) * (w[0] // group)
        return 2 * int(np.prod(out)) * per_output
    if op == "MatMulNBits":
        k, n = _attr(node, "K", 0), _attr(node, "N", 0)
        rows = int(np.prod(out[:-1])) if out else 1
        return 2 * rows * k * n
    a = dims(3 if op == "QLinearMatMul" else 0)
    if not a or not out:
        return 0
    k = a[-1] if not (op == "Gemm" and _attr(node, "transA", 0)) else a[0]
    return 2 * int(np.prod(out)) * k
