"""Weight-space rewrites that make a float graph easier to quantize, before int8: exact in float.

* **Cross-layer equalization** (Nagel et al. 2019, "Data-Free Quantization"): for two layers around a
  positively homogeneous activation (ReLU, or none) — ``y = W2 f(W1 x + b1) + b2`` — scaling output channel
  ``i`` of layer 1 by ``1/s_i`` and input channel ``i`` of layer 2 by ``s_i`` leaves ``y`` unchanged
  (``f(a/s) = f(a)/s`` for ``s > 0``). With ``s_i = sqrt(r1_i / r2_i)`` (``r``: each channel's weight range)
  both layers' channels get the same range, so per-tensor activation scales and per-channel weight scales
  waste no levels on one outlying channel. Conv->Conv (groups 1, or depthwise second layer) and Gemm/MatMul
  pairs are equalized; the chain is walked repeatedly until the scales settle.
* **SmoothQuant** (Xiao et al. 2023) for transformers: activation outliers of a MatMul's input channels are
  migrated into its weights, ``X W = (X diag(1/s)) (diag(s) W)`` with ``s_j = max|X_j|^a / max|W_j|^(1-a)``.
  The ``1/s`` folds into the LayerNormalization that produces ``X`` (its scale and bias), so no op is added;
  every consumer of that output must be a MatMul/Gemm with constant weights (Q, K, V share one ``s``).

Both are `Pass` objects for `compiler.passes.pipeline.run_pipeline` (with its numerics check: they must not
change the float outputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from compiler.passes.pipeline import PassResult

#: activations through which a per-channel positive scale passes unchanged
HOMOGENEOUS = ("Relu",)
ROUNDS = 4


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


class _Graph:
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


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


@dataclass
class _Layer:
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

    def scale_out(self, g: _Graph, s: np.ndarray) -> None:
        """Output channel o divided by s[o]."""
        w = g.array(self.weight)
        if self.kind == "gemm_t":
            w = w / s[None, :]
        else:
            w = w / s.reshape((-1,) + (1,) * (w.ndim - 1))
        g.set(self.weight, w)
        if self.bias:
            g.set(self.bias, g.array(self.bias) / s)

    def scale_in(self, g: _Graph, s: np.ndarray) -> None:
        """Input channel i multiplied by s[i]."""
        w = g.array(self.weight)
        if self.kind == "depthwise":
            w = w * s.reshape((-1,) + (1,) * (w.ndim - 1))
        elif self.kind == "gemm_t":
            w = w * s[:, None]
        else:
            w = w * s.reshape((1, -1) + (1,) * (w.ndim - 2))
        g.set(self.weight, w)


def _layer(g: _Graph, node: onnx.NodeProto) -> _Layer | None:
    if node.op_type == "Conv" and len(node.input) >= 2 and node.input[1] in g.init and not g.shared(node.input[1]):
        bias = node.input[2] if len(node.input) > 2 and node.input[2] in g.init else None
        if bias and g.shared(bias):
            return None
        w = g.array(node.input[1])
        group = _attr(node, "group", 1)
        if group == 1:
            return _Layer(node, node.input[1], bias, "conv")
        if group == w.shape[0] and w.shape[1] == 1:
            return _Layer(node, node.input[1], bias, "depthwise")
        return None
    if node.op_type == "Gemm" and node.input[1] in g.init and not g.shared(node.input[1]):
        if _attr(node, "transA", 0) or _attr(node, "alpha", 1.0) != 1.0:
            return None
        bias = node.input[2] if len(node.input) > 2 and node.input[2] in g.init else None
        if bias and (g.shared(bias) or g.array(bias).ndim != 1):
            return None
        return _Layer(node, node.input[1], bias, "gemm" if _attr(node, "transB", 0) else "gemm_t")
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
        return _Layer(node, node.input[1], bias, "gemm_t")
    return None


def _pairs(g: _Graph) -> list[tuple[_Layer, _Layer]]:
    """(first, second) layers with only a homogeneous activation (or nothing) between them."""
    pairs = []
    for node in g.model.graph.node:
        first = _layer(g, node)
        if first is None:
            continue
        value = node.output[0]
        if node.op_type == "MatMul" and first.bias:
            value = g.only_consumer(value).output[0]  # past the bias Add
        nxt = g.only_consumer(value)
        if nxt is not None and nxt.op_type in HOMOGENEOUS:
            value = nxt.output[0]
            nxt = g.only_consumer(value)
        second = _layer(g, nxt) if nxt is not None else None
        if second is None or second.node.input[0] != value:
            continue
        if first.out_ranges(g.array(first.weight)).shape != second.in_ranges(g.array(second.weight)).shape:
            continue
        pairs.append((first, second))
    return pairs


class CrossLayerEqualization:
    name = "cross_layer_equalization"
    requires_domains: tuple[str, ...] = ()

    def run(self, model: onnx.ModelProto) -> PassResult:
        out = _copy(model)
        g = _Graph(out)
        pairs = _pairs(g)
        if not pairs:
            return PassResult(model, False, {"fired": 0, "explain": "no two weighted layers around a ReLU (or "
                                                                    "nothing) with private weights"})
        spread_before = self._spread(g, pairs)
        for _ in range(ROUNDS):
            for first, second in pairs:
                r1 = first.out_ranges(g.array(first.weight))
                r2 = second.in_ranges(g.array(second.weight))
                ok = (r1 > 0) & (r2 > 0)
                s = np.ones_like(r1)
                s[ok] = np.sqrt(r1[ok] / r2[ok])
                first.scale_out(g, s)
                second.scale_in(g, s)
        return PassResult(out, True, {"fired": len(pairs), "pairs": [f"{a.node.name or a.node.output[0]} -> "
                                                                     f"{b.node.name or b.node.output[0]}"
                                                                     for a, b in pairs],
                                      "channel_range_spread_before": spread_before,
                                      "channel_range_spread_after": self._spread(g, pairs)})

    @staticmethod
    def _spread(g: _Graph, pairs) -> float:
        """Largest ratio of the widest to the narrowest output-channel weight range over the first layers."""
        worst = 1.0
        for first, _ in pairs:
            r = first.out_ranges(g.array(first.weight))
            r = r[r > 0]
            if len(r):
                worst = max(worst, float(r.max() / r.min()))
        return round(worst, 2)


class SmoothQuant:
    """Migrate activation outliers into MatMul weights, folding ``1/s`` into the LayerNormalization before them."""

    name = "smoothquant"
    requires_domains: tuple[str, ...] = ()

    def __init__(self, activation_max: Mapping[str, np.ndarray], alpha: float = 0.5) -> None:
        self.activation_max = activation_max  # value name -> per-channel max |x| over the calibration samples
        self.alpha = alpha

    def run(self, model: onnx.ModelProto) -> PassResult:
        out = _copy(model)
        g = _Graph(out)
        fired = []
        for norm in [n for n in out.graph.node if n.op_type == "LayerNormalization"]:
            value = norm.output[0]
            users = g.consumers.get(value, [])
            if not users or value in g.outputs or value not in self.activation_max:
                continue
            layers = [_layer(g, u) for u in users]
            if any(layer is None or layer.kind != "gemm_t" or layer.node.input[0] != value for layer in layers):
                continue
            if len(norm.input) < 2 or norm.input[1] not in g.init or g.shared(norm.input[1]):
                continue
            if len(norm.input) > 2 and norm.input[2] and (norm.input[2] not in g.init or g.shared(norm.input[2])):
                continue
            x_max = np.maximum(self.activation_max[value].astype(np.float64), 1e-5)
            w_max = np.max([np.abs(g.array(layer.weight)).max(axis=1) for layer in layers], axis=0)
            w_max = np.maximum(w_max.astype(np.float64), 1e-5)
            s = (x_max ** self.alpha / w_max ** (1 - self.alpha)).astype(np.float32)
            s = np.clip(s, 1e-2, 1e2)
            g.set(norm.input[1], g.array(norm.input[1]) / s)
            if len(norm.input) > 2 and norm.input[2]:
                g.set(norm.input[2], g.array(norm.input[2]) / s)
            for layer in layers:
                layer.scale_in(g, s)
            fired.append(norm.name or value)
        if not fired:
            return PassResult(model, False, {"fired": 0, "explain": "no LayerNormalization feeding only MatMul/Gemm "
                                                                    "layers with private constant weights"})
        return PassResult(out, True, {"fired": len(fired), "alpha": self.alpha, "norms": fired})
