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

from typing import Mapping

import numpy as np
import onnx

from compiler.passes.graph import Graph, WeightedLayer, copy_model, weighted_layer
from compiler.passes.pipeline import PassResult

#: activations through which a per-channel positive scale passes unchanged
HOMOGENEOUS = ("Relu",)
ROUNDS = 4


def _pairs(g: Graph) -> list[tuple[WeightedLayer, WeightedLayer]]:
    """(first, second) layers with only a homogeneous activation (or nothing) between them."""
    pairs = []
    for node in g.model.graph.node:
        first = weighted_layer(g, node)
        if first is None:
            continue
        value = node.output[0]
        if node.op_type == "MatMul" and first.bias:
            value = g.only_consumer(value).output[0]  # past the bias Add
        nxt = g.only_consumer(value)
        if nxt is not None and nxt.op_type in HOMOGENEOUS:
            value = nxt.output[0]
            nxt = g.only_consumer(value)
        second = weighted_layer(g, nxt) if nxt is not None else None
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
        out = copy_model(model)
        g = Graph(out)
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
    def _spread(g: Graph, pairs) -> float:
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
        out = copy_model(model)
        g = Graph(out)
        fired = []
        for norm in [n for n in out.graph.node if n.op_type == "LayerNormalization"]:
            value = norm.output[0]
            users = g.consumers.get(value, [])
            if not users or value in g.outputs or value not in self.activation_max:
                continue
            layers = [weighted_layer(g, u) for u in users]
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
