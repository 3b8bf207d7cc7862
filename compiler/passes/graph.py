"""Helpers every ONNX graph pass shares: a private copy of a model, the graph indexed by value name, node
attributes, and a weighted layer (Conv, Gemm, MatMul with constant weights) seen channel by channel."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A private copy: rewriters (onnxruntime's among them) may edit the proto they are given, and the float
    graph is shared by every cell of a build."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


class Graph:
    """Initializers as arrays, producers and consumers by value name."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.init = {t.name: t for t in model.graph.initializer}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        self.producer: dict[str, onnx.NodeProto] = {}
        for node in model.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
            for name in node.output:
                self.producer[name] = node
        self.outputs = {o.name for o in model.graph.output}

    def array(self, name: str) -> np.ndarray | None:
        return numpy_helper.to_array(self.init[name]).copy() if name in self.init else None

    def set(self, name: str, value: np.ndarray) -> None:
        self.init[name].CopyFrom(numpy_helper.from_array(value.astype(numpy_helper.to_array(self.init[name]).dtype),
                                                        name))

    def only_consumer(self, value: str) -> onnx.NodeProto | None:
        users = self.consumers.get(value, [])
        return users[0] if len(users) == 1 and value not in self.outputs else None

    def shared(self, name: str) -> bool:
        """An initializer read by more than one node cannot be rescaled for one of them."""
        return len(self.consumers.get(name, [])) != 1


def attribute(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


@dataclass
class WeightedLayer:
    """A weighted layer seen as ``out[o] = sum_i W[o, i, ...] in[i] + b[o]`` (weight in output-major view)."""

    node: onnx.NodeProto
    weight: str
    bias: str | None
    kind: str  # "conv", "depthwise", "gemm" (W[o, i]), "gemm_t" (W[i, o]: Gemm without transB, or MatMul)

    def out_ranges(self, w: np.ndarray) -> np.ndarray:
        if self.kind == "gemm_t":
            w = w.T
        return np.abs(w.reshape(w.shape[0], -1)).max(axis=1)

    def in_ranges(self, w: np.ndarray) -> np.ndarray:
        if self.kind == "depthwise":  # one input channel per output channel
            return np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
        if self.kind == "gemm_t":
            return np.abs(w).max(axis=1)
        return np.abs(np.moveaxis(w, 1, 0).reshape(w.shape[1], -1)).max(axis=1)

    def scale_out(self, g: Graph, s: np.ndarray) -> None:
        """Output channel o divided by s[o]."""
        w = g.array(self.weight)
        if self.kind == "gemm_t":
            w = w / s[None, :]
        else:
            w = w / s.reshape((-1,) + (1,) * (w.ndim - 1))
        g.set(self.weight, w)
        if self.bias:
            g.set(self.bias, g.array(self.bias) / s)

    def scale_in(self, g: Graph, s: np.ndarray) -> None:
        """Input channel i multiplied by s[i]."""
        w = g.array(self.weight)
        if self.kind == "depthwise":
            w = w * s.reshape((-1,) + (1,) * (w.ndim - 1))
        elif self.kind == "gemm_t":
            w = w * s[:, None]
        else:
            w = w * s.reshape((1, -1) + (1,) * (w.ndim - 2))
        g.set(self.weight, w)


def weighted_layer(g: Graph, node: onnx.NodeProto) -> WeightedLayer | None:
    if node.op_type == "Conv" and len(node.input) >= 2 and node.input[1] in g.init and not g.shared(node.input[1]):
        bias = node.input[2] if len(node.input) > 2 and node.input[2] in g.init else None
        if bias and g.shared(bias):
            return None
        w = g.array(node.input[1])
        group = attribute(node, "group", 1)
        if group == 1:
            return WeightedLayer(node, node.input[1], bias, "conv")
        if group == w.shape[0] and w.shape[1] == 1:
            return WeightedLayer(node, node.input[1], bias, "depthwise")
        return None
    if node.op_type == "Gemm" and node.input[1] in g.init and not g.shared(node.input[1]):
        if attribute(node, "transA", 0) or attribute(node, "alpha", 1.0) != 1.0:
            return None
        bias = node.input[2] if len(node.input) > 2 and node.input[2] in g.init else None
        if bias and (g.shared(bias) or g.array(bias).ndim != 1):
            return None
        return WeightedLayer(node, node.input[1], bias, "gemm" if attribute(node, "transB", 0) else "gemm_t")
    if node.op_type == "MatMul" and node.input[1] in g.init and not g.shared(node.input[1]):
        if g.array(node.input[1]).ndim != 2:
            return None
        # a constant bias is the Add that follows, when it is this MatMul's only consumer
        add = g.only_consumer(node.output[0])
        bias = None
        if add is not None and add.op_type == "Add":
            other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
            if other in g.init and g.array(other).ndim == 1 and not g.shared(other):
                bias = other
        return WeightedLayer(node, node.input[1], bias, "gemm_t")
    return None
