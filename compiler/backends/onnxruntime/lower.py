"""Lower to an optimized ONNX model (and `.ort`) with its execution provider configuration."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort

from compiler.backends import Lowered
from compiler.errors import BuildError, UnsupportedOpError
from compiler.frontend.onnx_file import signature_from_onnx
from targets.model import TracedModel
from targets.spec import TargetSpec

_LEVEL = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_NO_KERNEL = re.compile(r"Could not find an implementation for (\w+)\((\d+)\) node with name '([^']*)'")


def _session_options(level: str, output: Path, ort_format: bool) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = _LEVEL[level]
    options.optimized_model_filepath = str(output)
    options.log_severity_level = 3
    if ort_format:
        options.add_session_config_entry("session.save_model_format", "ORT")
    return options


def unsupported_op(exc: Exception, backend: str = "onnxruntime") -> UnsupportedOpError | None:
    match = _NO_KERNEL.search(str(exc))
    if match:
        op, opset, node = match.groups()
        return UnsupportedOpError(backend, op, node, f"no kernel for opset {opset} in this runtime")
    return None


def lower(
    model: TracedModel,
    target: TargetSpec,
    precision: str,
    workdir: Path,
    options: dict[str, Any],
) -> Lowered:
    if model.graph_precision != precision:
        raise BuildError(f"onnxruntime lowers the {precision} graph, but was given a {model.graph_precision} one")
    graph, passes = model.onnx_model, tuple(model.passes)
    source = workdir / "source.onnx"
    onnx.save(graph, source)
    level = options["graph_optimization"]
    notes: tuple[str, ...] = ()
    if precision == "int8" and level in ("extended", "all"):
        # Fusing Q/DQ into QLinearConv/QGemm offline would fix this host's kernel choices (x86 without VNNI gets
        # other rewrites than a VNNI CPU) into the artifact. Kept as QDQ, the target's ONNX Runtime makes those
        # fusions at load time for the CPU it runs on, and the artifact says exactly what the chip must compute.
        level = "basic"
        notes += ("int8: the graph stays in QDQ form (offline optimizations at 'basic'); the target's ONNX Runtime "
                  "fuses Q/DQ into the int8 kernels of its own CPU when it loads the model",)
    optimized = workdir / "model.onnx"
    # Optimization runs offline on the CPU provider; "basic" rewrites are provider-independent.
    try:
        ort.InferenceSession(str(source), _session_options(level, optimized, False), providers=["CPUExecutionProvider"])
        if options["ort_format"]:
            ort.InferenceSession(
                str(source), _session_options(level, workdir / "model.ort", True), providers=["CPUExecutionProvider"]
            )
    except Exception as exc:
        raise unsupported_op(exc) or BuildError(f"onnxruntime could not optimize the model: {exc}") from exc
    finally:
        source.unlink(missing_ok=True)
    config = {
        "execution_provider": options["execution_provider"],
        "provider_options": options["provider_options"],
        "graph_optimization": level,
        "model": "model.onnx",
        "ort_model": "model.ort" if options["ort_format"] else None,
        "onnxruntime_version": ort.__version__,
    }
    (workdir / "ep_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    files = ["model.onnx", "ep_config.json"] + (["model.ort"] if options["ort_format"] else [])
    optimized_model = onnx.load(str(optimized))
    histogram: dict[str, int] = {}
    for node in optimized_model.graph.node:
        histogram[node.op_type] = histogram.get(node.op_type, 0) + 1
    passes = passes + ({"name": f"onnxruntime-graph-optimization-{level}", "op_histogram_after": histogram},)
    fallbacks: tuple[str, ...] = ()
    if options["execution_provider"] != "CPUExecutionProvider":
        # Contrib ops (com.microsoft) are CPU-provider kernels: an accelerator's provider hands them back.
        # The exception is 16-bit Q/DQ, which lives in that domain before opset 21 and which NPU providers take.
        fallbacks = tuple(f"{n.name or n.output[0]} ({n.domain}.{n.op_type})" for n in optimized_model.graph.node
                          if n.domain not in ("", "ai.onnx") and n.op_type not in ("QuantizeLinear", "DequantizeLinear"))
    if options["ort_format"]:
        # Found by the conformance kit's determinism check: some 50 bytes of the flatbuffer vary per build.
        notes += ("model.ort is not byte-identical across builds (ONNX Runtime's ORT-format writer); "
                 "model.onnx is, and both carry the same graph",)
    return Lowered(
        files=tuple(files),
        signature=signature_from_onnx(optimized_model),
        options=dict(options),
        passes=passes,
        fallbacks=fallbacks,
        notes=notes,
    )
