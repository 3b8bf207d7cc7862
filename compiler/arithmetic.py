"""Run an int8 QDQ graph with a chip's own integer arithmetic, whatever CPU this host has.

A QDQ graph says what the chip computes: quantize, integer multiply-accumulate, requantize. ONNX Runtime's
CPU kernels on this host may compute something else: on x86 without VNNI their u8 x s8 kernels add product
pairs into a saturating int16 (see `targets.isa`). So verification picks an execution by the two ISAs:

* ``native``: the host computes what the target computes (or the graph has no layer where they differ):
  the artifact runs as its runtime loads it.
* ``qdq``: the target accumulates exactly (VNNI, Arm, an NPU) and this host does not: ONNX Runtime with its
  graph optimizations off, so every QuantizeLinear / DequantizeLinear runs as written and the layers between
  them in float, which equals exact int32 accumulation up to float rounding.
* ``emulated``: the target saturates and this host does not: each int8 convolution and matmul is computed
  in numpy as the target's kernel does (raw uint8 activations x int8 weights, adjacent products summed into
  a saturating int16 along the reduction, NHWC order for convolutions as ONNX Runtime's QLinearConv packs
  them; then the zero-point correction and the scales); every other op runs in ONNX's reference evaluator.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.passes.graph import copy_model
from targets.isa import EXACT, X86_PAIRS

NATIVE, QDQ, EMULATED, SIMULATOR = "native", "qdq", "emulated", "simulator"
EXECUTIONS = {
    NATIVE: "as the runtime loads the artifact",
    QDQ: "QDQ semantics (ONNX Runtime, graph optimizations off: Q/DQ as written, int32-exact)",
    EMULATED: "the target's int8 arithmetic emulated (u8 x s8 pairs saturating in int16)",
    SIMULATOR: "the chip vendor's simulator of its accelerator (numerics, not speed)",
}
_DOMAIN = "chipfit.emulate"
_LAYERS = ("Conv", "Gemm", "MatMul")
_INT16 = (-32768, 32767)


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in graph.node for o in n.output}


def _int8_layers(model: onnx.ModelProto):
    """(layer, activation DQ, weight DQ) for every Conv/Gemm/MatMul whose data input is a dequantized 8-bit
    activation and whose weight is a dequantized 8-bit initializer."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = _producers(graph)
    eight_bit = (onnx.TensorProto.UINT8, onnx.TensorProto.INT8)
    for node in graph.node:
        if node.op_type not in _LAYERS or len(node.input) < 2:
            continue
        x, w = producers.get(node.input[0]), producers.get(node.input[1])
        if not (x and w and x.op_type == "DequantizeLinear" and w.op_type == "DequantizeLinear"):
            continue
        if w.input[0] not in inits or len(x.input) < 3 or x.input[2] not in inits:
            continue
        if inits[w.input[0]].data_type not in eight_bit or inits[x.input[2]].data_type not in eight_bit:
            continue
        yield node, x, w, inits


def has_int8_layers(model: onnx.ModelProto) -> bool:
    return next(iter(_int8_layers(model)), None) is not None


def saturation_exposed(model: onnx.ModelProto) -> bool:
    """Whether some int8 layer's arithmetic differs between an int16-pair CPU and an exact one: int8 weights
    beyond 7 bits in a layer that is not depthwise (depthwise kernels multiply in int32 on every CPU)."""
    for node, _, w, inits in _int8_layers(model):
        weights = numpy_helper.to_array(inits[w.input[0]])
        if weights.dtype != np.int8 or np.abs(weights.astype(np.int32)).max() <= 64:
            continue
        if node.op_type == "Conv" and _depthwise(node, weights):
            continue
        return True
    return False


def _depthwise(node: onnx.NodeProto, weights: np.ndarray) -> bool:
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    return group > 1 and weights.shape[1] == 1


def execution_for(model: onnx.ModelProto, target: str, host: str) -> str:
    """How to run ``model`` here so that it computes what a chip of int8 arithmetic ``target`` computes, on a
    host of int8 arithmetic ``host`` (`targets.isa.ARITHMETIC`)."""
    if target == host or not saturation_exposed(model):
        return NATIVE
    return QDQ if target == EXACT else EMULATED


# --- the emulation ---------------------------------------------------------------------------------------


def _pair_dot(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(P, K) raw activations x (K, M) weights, int32, as vpmaddubsw + vpmaddwd compute it: products of
    adjacent K elements summed into a saturating int16, those sums added in int32."""
    if a.shape[1] % 2:
        a = np.pad(a, ((0, 0), (0, 1)))
        w = np.pad(w, ((0, 1), (0, 0)))
    a0, a1, w0, w1 = a[:, 0::2], a[:, 1::2], w[0::2], w[1::2]
    out = np.empty((a.shape[0], w.shape[1]), dtype=np.int64)
    step = max(1, (16 << 20) // max(1, a0.shape[1] * w.shape[1]))  # rows per chunk: about 128 MB of int64
    for i in range(0, a.shape[0], step):
        pairs = a0[i:i + step, :, None] * w0[None] + a1[i:i + step, :, None] * w1[None]
        out[i:i + step] = np.clip(pairs, *_INT16).sum(axis=1)
    return out


def _raw_activation(xq: np.ndarray, zero: np.ndarray) -> tuple[np.ndarray, int]:
    """int8 activations are shifted to uint8 on x86 (the kernels are u8 x s8): value and zero point as run."""
    zp = int(np.asarray(zero).reshape(-1)[0])
    if xq.dtype == np.int8:
        return xq.astype(np.int64) + 128, zp + 128
    return xq.astype(np.int64), zp


def _per_channel(values: np.ndarray, channels: int) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    return np.broadcast_to(values, (channels,)) if values.size == 1 else values


def _dequantized_dot(a: np.ndarray, za: int, x_scale, w: np.ndarray, w_scale, w_zero, saturate: bool) -> np.ndarray:
    """(P, K) raw activations x (K, M) integer weights -> float (P, M), with the zero points taken out."""
    channels = w.shape[1]
    wz = _per_channel(w_zero, channels).astype(np.int64)
    w = w.astype(np.int64) - wz[None, :]
    acc = _pair_dot(a, w) if saturate and not wz.any() else a @ w
    acc = acc - za * w.sum(axis=0)[None, :]  # the zero point is taken out with exact column sums
    return acc * float(np.asarray(x_scale).reshape(-1)[0]) * _per_channel(w_scale, channels)[None, :]


def _make_ops():
    from onnx.reference.op_run import OpRun

    class SatConv(OpRun):
        op_domain = _DOMAIN

        def _run(self, xq, xs, xz, wq, ws, wz, bias=None, dilations=None, group=None, kernel_shape=None,
                 pads=None, strides=None, auto_pad=None):
            a, za = _raw_activation(xq, xz)
            n, c, h, width = a.shape
            m, cg, kh, kw = wq.shape
            group = group or 1
            dil = list(dilations or (1, 1))
            st = list(strides or (1, 1))
            pad = list(pads or (0, 0, 0, 0))
            a = np.pad(a, ((0, 0), (0, 0), (pad[0], pad[2]), (pad[1], pad[3])), constant_values=za)
            oh = (a.shape[2] - dil[0] * (kh - 1) - 1) // st[0] + 1
            ow = (a.shape[3] - dil[1] * (kw - 1) - 1) // st[1] + 1
            depthwise = group > 1 and cg == 1
            out = np.empty((n, m, oh, ow))
            per_group = m // group
            for g in range(group):
                part = a[:, g * cg:(g + 1) * cg]
                # NHWC patches: the reduction runs over (kh, kw, channel), channels innermost
                cols = np.stack([part[:, :, i * dil[0]:i * dil[0] + st[0] * oh:st[0],
                                      j * dil[1]:j * dil[1] + st[1] * ow:st[1]]
                                 for i in range(kh) for j in range(kw)], axis=1)  # n, kh*kw, cg, oh, ow
                cols = cols.transpose(0, 3, 4, 1, 2).reshape(n * oh * ow, kh * kw * cg)
                rows = slice(g * per_group, (g + 1) * per_group)
                weights = wq[rows].transpose(0, 2, 3, 1).reshape(per_group, kh * kw * cg).T
                scale = _per_channel(ws, m)[rows]
                zero = _per_channel(wz, m)[rows]
                res = _dequantized_dot(cols, za, xs, weights, scale, zero, saturate=not depthwise)
                out[:, rows] = res.reshape(n, oh, ow, per_group).transpose(0, 3, 1, 2)
            if bias is not None:
                out += np.asarray(bias).reshape(1, -1, 1, 1)
            return (out.astype(np.float32),)

    class SatGemm(OpRun):
        op_domain = _DOMAIN

        def _run(self, xq, xs, xz, wq, ws, wz, bias=None, alpha=None, beta=None, transA=None, transB=None):
            a, za = _raw_activation(xq, xz)
            if transA:
                a = a.T
            w = wq.T if transB else wq
            out = (alpha if alpha is not None else 1.0) * _dequantized_dot(a, za, xs, w, ws, wz, saturate=True)
            if bias is not None:
                out = out + (beta if beta is not None else 1.0) * np.asarray(bias)
            return (out.astype(np.float32),)

    class SatMatMul(OpRun):
        op_domain = _DOMAIN

        def _run(self, xq, xs, xz, wq, ws, wz):
            a, za = _raw_activation(xq, xz)
            lead = a.shape[:-1]
            out = _dequantized_dot(a.reshape(-1, a.shape[-1]), za, xs, wq, ws, wz, saturate=True)
            return (out.reshape(*lead, wq.shape[-1]).astype(np.float32),)

    return [SatConv, SatGemm, SatMatMul]


def emulated_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its int8 layers replaced by the emulating ops (the reference evaluator runs the rest)."""
    copy = copy_model(model)
    replaced = {node.name or node.output[0]: (x, w) for node, x, w, _ in _int8_layers(copy)}
    nodes = []
    for node in copy.graph.node:
        if (node.name or node.output[0]) not in replaced or node.domain == _DOMAIN:
            nodes.append(node)
            continue
        x, w = replaced[node.name or node.output[0]]
        inputs = [x.input[0], x.input[1], x.input[2], w.input[0], w.input[1],
                  w.input[2] if len(w.input) > 2 else ""] + list(node.input[2:])
        if not inputs[5]:
            zero = numpy_helper.from_array(np.zeros((), np.int8), node.name + "_wzero")
            copy.graph.initializer.append(zero)
            inputs[5] = zero.name
        emulating = helper.make_node("Sat" + node.op_type, inputs, list(node.output), name=node.name, domain=_DOMAIN)
        emulating.attribute.extend(node.attribute)
        nodes.append(emulating)
    del copy.graph.node[:]
    copy.graph.node.extend(nodes)
    copy.opset_import.append(helper.make_opsetid(_DOMAIN, 1))
    for opset in copy.opset_import:
        # onnx's reference evaluator implements Quantize/DequantizeLinear from opset 19 only; every op changed at
        # 19 (Pad, Resize, Cast, Reshape, ...) gained options and kept its default meaning, so an older graph (an
        # exporter's opset 17 or 18) runs unchanged at 19
        if opset.domain in ("", "ai.onnx") and opset.version < 19:
            opset.version = 19
    return copy


class EmulatedGraph:
    """A QDQ graph run with x86's int16-pair arithmetic (`X86_PAIRS`), on any host."""

    arithmetic = X86_PAIRS

    def __init__(self, model: onnx.ModelProto) -> None:
        from onnx.reference import ReferenceEvaluator

        self._session = ReferenceEvaluator(emulated_graph(model), new_ops=_make_ops())
        self.input_names = [i.name for i in model.graph.input
                            if i.name not in {t.name for t in model.graph.initializer}]
        self.output_names = [o.name for o in model.graph.output]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self._session.run(None, {name: inputs[name] for name in self.input_names})
        return dict(zip(self.output_names, results))


def qdq_session(model: onnx.ModelProto | str):
    """An ONNX Runtime CPU session that runs Q/DQ as written (no fusion into the host's integer kernels)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run_as(model: onnx.ModelProto, inputs: Mapping[str, np.ndarray], execution: str) -> dict[str, np.ndarray]:
    """``model`` on ``inputs`` by ``execution`` (native: ONNX Runtime's CPU provider as an application loads it),
    in chunks of the graph's batch where it is static."""
    from targets.signature import run_batched

    if execution == EMULATED:
        run = EmulatedGraph(model).run
    else:
        import onnxruntime as ort

        if execution == QDQ:
            session = qdq_session(model)
        else:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]

        def run(chunk: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            return dict(zip(names, session.run(names, {i.name: chunk[i.name] for i in session.get_inputs()})))

    first = model.graph.input[0].type.tensor_type.shape.dim[:1] if model.graph.input else []
    batch = first[0].dim_value if first and first[0].HasField("dim_value") and first[0].dim_value > 0 else None
    return run_batched(run, inputs, batch)
