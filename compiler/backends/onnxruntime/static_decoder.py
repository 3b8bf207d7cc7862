"""The static-shape form of a decoder for ONNX Runtime's NPU providers (QNN, OpenVINO NPU), and its runner.

NPU providers compile graphs of fixed shapes. Beside the ONNX Runtime GenAI folder, an artifact for such a
target holds ``static/prefill.onnx`` (a chunk of tokens) and ``static/decode.onnx`` (one token), the programs of
`compiler.llm.static_onnx`. Their weights are one file, ``static/weights.data``, that both graphs point into.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from compiler.backends import DecoderForm
from compiler.llm.static_onnx import DEFAULT_CHUNK, export_programs, save_sharing_weights

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


class StaticOrtRunner:
    """The static programs in ONNX Runtime sessions, fed in chunks (`compiler.llm.static.ChunkedRunner`)."""

    def __init__(self, folder: Path, layout: Mapping, provider: str = "CPUExecutionProvider") -> None:
        import onnxruntime as ort

        from compiler.llm.static import ChunkedRunner

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self._sessions = {name: ort.InferenceSession(str(folder / FOLDER / f"{name}.onnx"), options, providers=[provider])
                          for name in ("prefill", "decode")}
        shapes = [tuple(s) for s in layout["cache_shapes"]]
        self.description = f"onnxruntime {ort.__version__} {provider} (static prefill x{layout['chunk']} + decode)"
        self._chunked = ChunkedRunner(self._step("prefill"), self._step("decode"), layout["chunk"],
                                      lambda: [np.zeros(s, np.float32) for s in shapes], layout["context"],
                                      self.description)

    def _step(self, name: str):
        session = self._sessions[name]
        inputs = [i.name for i in session.get_inputs()]

        def run(ids, positions, past):
            out = session.run(None, dict(zip(inputs, [ids, positions, *past])))
            return out[0], out[1:]

        return run

    def generate(self, ids, new_tokens, stop=(), on_token=None):
        return self._chunked.generate(ids, new_tokens, stop, on_token)

    def logits(self, ids):
        return self._chunked.logits(ids)

    def set_threads(self, threads: int) -> bool:
        return False  # the pool is sized at start-up (TVM_NUM_THREADS / the session), and the CPUs are pinned
