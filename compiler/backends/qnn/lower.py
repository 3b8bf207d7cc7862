"""Compile an ONNX graph with QNN into the artifact an Android app loads: an EPContext model and its HTP context
binary, made offline for the target's SoC, with the record of which nodes the HTP took and which fell back.

int8 is chipfit's QDQ graph (the precision stage's calibration, scheme, activation type and budget; uint16
activations give QNN's w8a16); int4 is QNN's w4a16, the float graph quantized here with ONNX Runtime's QNN recipe
on the build's samples (the build judges it on the evaluation set and holds it to --accuracy-budget); fp16 is the
float graph compiled with the HTP's fp16 precision.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx

from compiler.backends import Lowered
from compiler.backends.qnn import ep
from compiler.backends.qnn.socs import soc_for
from compiler.errors import BuildError, LowerError, UnsupportedOpError
from compiler.frontend.onnx_file import signature_from_onnx
from targets.model import TracedModel
from targets.spec import TargetSpec

CONTEXT_MODEL = "model_ctx.onnx"
#: ONNX Runtime names the context binary after the EPContext model
CONTEXT_BINARY = "model_ctx_qnn.bin"
SOURCE = "source.onnx"
CONFIG = "qnn_config.json"
#: ONNX Runtime's layout transformation (NHWC for the HTP) renames the nodes it rewrites ``<name>_token_<n>`` and
#: names the transposes (and their Q/DQ) it inserts ``<Op>_token_<n>``
_RENAMED = re.compile(r"_token_\d+$")


def placement_record(graph: onnx.GraphProto, placed: list[tuple[str, str, str]]) -> dict[str, Any]:
    """Which of ``graph``'s nodes the HTP took, which fell back to the CPU, and the graph-I/O Q/DQ that QNN leaves
    to the CPU by design (a graph input's QuantizeLinear, a graph output's DequantizeLinear)."""
    nodes = {n.name: n for n in graph.node}
    inputs, outputs = {i.name for i in graph.input}, {o.name for o in graph.output}

    def io_quantization(name: str, op: str) -> bool:
        node = nodes.get(name)
        return node is not None and ((op == "QuantizeLinear" and node.input[0] in inputs)
                                     or (op == "DequantizeLinear" and node.output[0] in outputs))

    htp = [(name, op) for provider, name, op in placed if provider == ep.EP]
    cpu = [(name, op) for provider, name, op in placed if provider != ep.EP]
    io = [(name, op) for name, op in cpu if io_quantization(name, op)]
    fallback = [(name, op) for name, op in cpu if (name, op) not in io]
    names = set(nodes)
    own = [(name, op) for name, op in htp if name in names or _RENAMED.sub("", name) in names]
    return {
        "htp": {"nodes": len(own), "ops": dict(sorted(Counter(op for _, op in own).items())),
                "layout_nodes_inserted": len(htp) - len(own)},
        "cpu_fallback": {"nodes": len(fallback), "ops": dict(sorted(Counter(op for _, op in fallback).items())),
                         "names": [f"{name or 'unnamed'} ({op})" for name, op in fallback]},
        "cpu_io_quantization": [f"{name or 'unnamed'} ({op})" for name, op in io],
    }


def _quantize_int4(graph: onnx.ModelProto, calibration: Sequence[Mapping[str, np.ndarray]], activation: str,
                   workdir: Path) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The float graph quantized with ONNX Runtime's QNN recipe: int4 weights (symmetric, per channel where QNN
    takes it: convolutions; MatMul per tensor) and 8- or 16-bit activations from min/max on the samples."""
    from compiler.backends.qnn.quantize import qnn_qdq

    if not calibration:
        raise LowerError("qnn's int4 (w4a16) quantizes activations and needs calibration samples: pass "
                         "--calibration PATH, or --calibration random")
    float_path, out = workdir / "float.onnx", workdir / "int4.onnx"
    onnx.save(graph, float_path)
    qnn_qdq(float_path, out, calibration, activation, "int4", per_channel=True, weight_symmetric=True)
    quantized = onnx.load(str(out))
    float_path.unlink()
    out.unlink()
    return quantized, {"name": "quantize-qnn-int4", "weights": "int4 symmetric, per channel (convolutions)",
                       "activations": activation, "calibration": "minmax", "samples": len(calibration),
                       "recipe": "onnxruntime.quantization get_qnn_qdq_config"}


def lower(model: TracedModel, target: TargetSpec, precision: str, workdir: Path, options: dict[str, Any],
          calibration: Sequence[Mapping[str, np.ndarray]] = (), activation: str = "uint16") -> Lowered:
    fp16 = precision == "fp16"
    if precision == "int8" and model.graph_precision != precision:
        raise BuildError(f"qnn compiles the {precision} graph, but was given a {model.graph_precision} one")
    soc = soc_for(options["soc_model"], options["htp_arch"], str(target.source_file))
    graph, passes = model.onnx_model, tuple(model.passes)
    if precision == "int4":
        graph, record = _quantize_int4(graph, calibration, activation, workdir)
        passes += (record,)
    source = workdir / SOURCE
    onnx.save(graph, source)
    provider = ep.compile_options(options, fp16)
    config = {"ep.context_enable": "1", "ep.context_file_path": str(workdir / CONTEXT_MODEL),
              "ep.context_embed_mode": "0"}
    try:
        # from bytes, not the path: ONNX Runtime names the compiled partition (and so the QNN graph in the binary)
        # after a hash of the model's path, which differs per build directory
        session = ep.session(source.read_bytes(), provider, config)
    except LowerError:
        raise
    except Exception as exc:
        raise LowerError(f"QNN could not compile the graph for {soc.part} (HTP v{soc.htp_arch}): {exc}") from exc
    placement = placement_record(graph.graph, ep.placement(session))
    del session
    if not placement["htp"]["nodes"] or not (workdir / CONTEXT_BINARY).exists():
        fallback = placement["cpu_fallback"]
        names = [name.split(" (")[0] for name in fallback["names"]]
        raise UnsupportedOpError(
            "qnn", ", ".join(fallback["ops"]) or "?", ", ".join(names[:6]) + (" ..." if len(names) > 6 else ""),
            f"QNN's HTP ({soc.part}, v{soc.htp_arch}) takes none of the graph's nodes, so there is no context binary "
            f"to ship; replace those ops, or build with --backend onnxruntime (the QDQ model, run on the CPU there)")
    run_config = {
        "execution_provider": ep.EP,
        "provider_options": {"backend_path": "libQnnHtp.so", "htp_performance_mode": options["htp_performance_mode"],
                             **({"vtcm_mb": options["vtcm_mb"]} if options["vtcm_mb"] else {}),
                             **({"enable_htp_fp16_precision": 1} if fp16 else {})},
        "model": CONTEXT_MODEL, "context_binary": CONTEXT_BINARY, "source_model": SOURCE,
        "soc_model": soc.soc_model, "soc": f"{soc.part} ({soc.name})", "htp_arch": soc.htp_arch,
        **ep.versions(),
    }
    (workdir / CONFIG).write_text(json.dumps(run_config, indent=2, sort_keys=True) + "\n")
    fallback = placement["cpu_fallback"]
    notes = [f"compiled offline by QNN {ep.versions().get('qnn_sdk', '?')} for {soc.part} ({soc.name}, HTP "
             f"v{soc.htp_arch}): {placement['htp']['nodes']} nodes on the HTP in the context binary, "
             f"{fallback['nodes']} on the CPU"]
    if fallback["nodes"]:
        notes.append(f"the graph does not run fully on the HTP: {', '.join(fallback['names'][:8])}"
                     + (" ..." if fallback["nodes"] > 8 else "") + " run on ONNX Runtime's CPU provider, each "
                     "boundary a copy and a requantization")
    if placement["cpu_io_quantization"]:
        notes.append("the graph's input quantization and output dequantization run on the CPU (QNN's "
                     "offload_graph_io_quantization): the application feeds and reads float tensors")
    if fp16:
        notes.append("fp16: the float graph compiled with the HTP's fp16 precision (enable_htp_fp16_precision)")
    context = onnx.load(str(workdir / CONTEXT_MODEL))
    return Lowered(
        files=(CONTEXT_MODEL, CONTEXT_BINARY, CONFIG, SOURCE),
        signature=signature_from_onnx(context),
        options=dict(options),
        passes=passes + ({"name": "qnn-compile", "soc_model": soc.soc_model, "soc": soc.part,
                                       "htp_arch": soc.htp_arch, "provider_options": provider,
                                       **ep.versions(), **placement},),
        notes=tuple(notes),
        fallbacks=tuple(fallback["names"]),
    )
