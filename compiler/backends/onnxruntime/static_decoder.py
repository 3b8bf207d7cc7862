"""The static-shape form of a decoder for ONNX Runtime's NPU providers (QNN, OpenVINO NPU), and its runner.

NPU providers compile graphs of fixed shapes. Beside the ONNX Runtime GenAI folder, an artifact for such a
target holds ``static/prefill.onnx`` (a chunk of tokens) and ``static/decode.onnx`` (one token), the programs of
`compiler.llm.static_onnx`. Their weights are one file, ``static/weights.data``, that both graphs point into.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from compiler.backends import DecoderForm
from compiler.llm.static_onnx import DEFAULT_CHUNK, SessionPairRunner, export_programs, save_sharing_weights

FOLDER = "static"
WEIGHTS = "weights.data"


def export_static(model, workdir: Path, context: int, chunk: int | None) -> tuple[DecoderForm, list[str], dict]:
    from compiler.llm.static import cache_shapes

    chunk = min(chunk or DEFAULT_CHUNK, context)
    spec = model.spec
    folder = workdir / FOLDER
    folder.mkdir()
    save_sharing_weights(export_programs(model, context, chunk), folder, WEIGHTS)
    form = DecoderForm(cache_form="static", programs=("prefill", "decode"), runtime="onnxruntime (static shapes)",
                       context=context, kv_bytes_per_element=4, prefill_chunk=chunk,
                       weight_precisions={"embedding": "fp32", "matmuls": "fp32", "lm_head": "fp32"},
                       windowed_cache=False, name="static")
    layout = {"chunk": chunk, "context": context, "cache_shapes": [list(s) for s in cache_shapes(spec, context)]}
    files = [f"{FOLDER}/{p.name}" for p in sorted(folder.iterdir())]
    return form, files, layout


def static_ort_runner(folder: Path, layout: Mapping, provider: str = "CPUExecutionProvider") -> SessionPairRunner:
    """The static programs in ONNX Runtime sessions on ``provider``, fed in chunks."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    sessions = {name: ort.InferenceSession(str(folder / FOLDER / f"{name}.onnx"), options, providers=[provider])
                for name in ("prefill", "decode")}
    return SessionPairRunner(sessions, layout,
                             f"onnxruntime {ort.__version__} {provider} (static prefill x{layout['chunk']} + decode)")
