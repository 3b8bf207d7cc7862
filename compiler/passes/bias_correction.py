"""Bias correction (Nagel et al. 2019): undo the mean output shift that rounding a layer's weights causes.

Quantizing ``W`` to ``Q(W)`` shifts a layer's output by ``(Q(W) - W) E[x]`` on average, and the shift adds
up through the network (it is what makes a per-channel int8 model lose accuracy with no outlier in sight).
The pass simulates the int8 weight rounding the quantizer will apply (symmetric, per output channel or per
tensor, as the target's settings say), takes ``E[x]`` per input channel from the calibration samples, and
subtracts the expected shift from each layer's bias. It is the one pre-quantization pass that changes the
float graph's outputs on purpose, so the quantized graph comes out right; the precision stage keeps it only
where the quantized graph's accuracy report improves.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx

from compiler.passes.graph import Graph, copy_model, weighted_layer
from compiler.passes.pipeline import PassResult


def simulate_int8(weight: np.ndarray, axis: int | None) -> np.ndarray:
    """``weight`` after symmetric int8 quantize-dequantize as ONNX Runtime's quantizer does it: scale =
    2 max|w| / 255 per channel along ``axis`` (or per tensor), zero point 0, values clipped to [-128, 127]."""
    if axis is None:
        peak = np.abs(weight).max(keepdims=True)
    else:
        peak = np.abs(weight).max(axis=tuple(a for a in range(weight.ndim) if a != axis), keepdims=True)
    scale = np.where(peak > 0, 2 * peak / 255, 1.0)
    return np.clip(np.round(weight / scale), -128, 127) * scale


def layer_inputs(model: onnx.ModelProto) -> dict[str, tuple[str, int]]:
    """Weighted layers with a bias: node name -> (its activation input, that input's channel axis)."""
    g = Graph(model)
    found = {}
    for node in model.graph.node:
        layer = weighted_layer(g, node)
        if layer is not None and layer.bias:
            found[node.name or node.output[0]] = (node.input[0], 1 if layer.kind in ("conv", "depthwise") else -1)
    return found


class BiasCorrection:
    name = "bias_correction"
    requires_domains: tuple[str, ...] = ()

    def __init__(self, input_means: Mapping[str, np.ndarray], per_channel: bool) -> None:
        self.input_means = input_means  # activation value name -> mean per channel over the calibration samples
        self.per_channel = per_channel

    def run(self, model: onnx.ModelProto) -> PassResult:
        out = copy_model(model)
        g = Graph(out)
        corrected, largest = [], 0.0
        for node in out.graph.node:
            layer = weighted_layer(g, node)
            if layer is None or not layer.bias or node.input[0] not in self.input_means:
                continue
            mean = self.input_means[node.input[0]].astype(np.float64)
            w = g.array(layer.weight).astype(np.float64)
            if layer.kind == "gemm_t":  # W[in, out]: the output channel is axis 1
                delta = simulate_int8(w, 1 if self.per_channel else None) - w
                shift = mean @ delta
            else:
                delta = simulate_int8(w, 0 if self.per_channel else None) - w
                if layer.kind == "depthwise":
                    shift = delta.reshape(delta.shape[0], -1).sum(axis=1) * mean
                else:
                    per_in = delta.reshape(delta.shape[0], delta.shape[1], -1).sum(axis=2)
                    shift = per_in @ mean
            if shift.shape != g.array(layer.bias).shape:
                continue
            g.set(layer.bias, g.array(layer.bias) - shift)
            corrected.append(node.name or node.output[0])
            largest = max(largest, float(np.abs(shift).max()))
        if not corrected:
            return PassResult(model, False, {"fired": 0, "explain": "no weighted layer with a bias and a measured input"})
        return PassResult(out, True, {"fired": len(corrected), "largest_shift": round(largest, 6)})


def channel_statistics(model: onnx.ModelProto, samples: Mapping[str, np.ndarray],
                       values: Mapping[str, int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-channel (mean, max |x|) of intermediate ``values`` (name -> channel axis) over ``samples``."""
    from compiler.passes.quantize import run_graph

    probe = copy_model(model)
    known = {o.name for o in probe.graph.output}
    for name in values:
        if name not in known:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    outputs = run_graph(probe, samples)
    stats = {}
    for name, axis in values.items():
        x = np.asarray(outputs[name], dtype=np.float64)
        moved = np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])
        stats[name] = (moved.mean(axis=0), np.abs(moved).max(axis=0))
    return stats
