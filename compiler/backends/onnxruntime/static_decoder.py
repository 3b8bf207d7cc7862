"""The static-shape form of a decoder for ONNX Runtime's NPU providers (QNN, OpenVINO NPU), and its runner.

NPU providers compile graphs of fixed shapes. Beside the ONNX Runtime GenAI folder, an artifact for such a
target holds ``static/prefill.onnx`` (a chunk of tokens) and ``static/decode.onnx`` (one token), both the
static-cache step of `compiler.llm.static` with the cache as explicit input and output, exported with
``torch.onnx.export``. Their weights are one file, ``static/weights.data``, that both graphs point into.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np
import onnx

from compiler.backends import DecoderForm
from compiler.errors import LowerError

FOLDER = "static"
WEIGHTS = "weights.data"
DEFAULT_CHUNK = 32


def _names(spec) -> tuple[list[str], list[str]]:
    past = [f"past.{i}.{kind}" for i in range(spec.layers) for kind in ("key", "value")]
    return past, [name.replace("past", "present") for name in past]


def export_static(model, workdir: Path, context: int, chunk: int | None) -> tuple[DecoderForm, list[str], dict]:
    import torch

    from compiler.llm.static import cache_shapes, functional_step

    chunk = min(chunk or DEFAULT_CHUNK, context)
    spec = model.spec
    step = functional_step(model.torch_model(), context)
    past = tuple(torch.zeros(shape) for shape in cache_shapes(spec, context))
    past_names, present_names = _names(spec)
    folder = workdir / FOLDER
    folder.mkdir()
    graphs = {}
    with tempfile.TemporaryDirectory(prefix="chipfit-static-") as scratch:
        for name, tokens in (("prefill", chunk), ("decode", 1)):
            path = Path(scratch) / f"{name}.onnx"
            try:
                with torch.no_grad():
                    torch.onnx.export(step, (torch.zeros(1, tokens, dtype=torch.long),
                                             torch.arange(tokens, dtype=torch.long), *past), str(path), dynamo=True,
                                      input_names=["input_ids", "cache_position", *past_names],
                                      output_names=["logits", *present_names], optimize=True, verbose=False)
            except Exception as exc:
                raise LowerError(f"torch.onnx.export could not export {spec.architecture}'s static {name} step: "
                                 f"{type(exc).__name__}: {str(exc)[:300]}") from exc
            graphs[name] = onnx.load(str(path))
    _save_sharing_weights(graphs, folder)
    form = DecoderForm(cache_form="static", programs=("prefill", "decode"), runtime="onnxruntime (static shapes)",
                       context=context, kv_bytes_per_element=4, prefill_chunk=chunk,
                       weight_precisions={"embedding": "fp32", "matmuls": "fp32", "lm_head": "fp32"},
                       windowed_cache=False, name="static")
    layout = {"chunk": chunk, "context": context, "cache_shapes": [list(s) for s in cache_shapes(spec, context)]}
    files = [f"{FOLDER}/{p.name}" for p in sorted(folder.iterdir())]
    return form, files, layout


def _save_sharing_weights(graphs: Mapping[str, onnx.ModelProto], folder: Path) -> None:
    """Both graphs' large initializers in one data file; an initializer both graphs hold (same name and bytes)
    is stored once and referenced from both."""
    offsets: dict[str, tuple[int, int, bytes]] = {}
    with open(folder / WEIGHTS, "wb") as data:
        for name, graph in graphs.items():
            for tensor in graph.graph.initializer:
                raw = onnx.numpy_helper.to_array(tensor).tobytes() if not tensor.raw_data else tensor.raw_data
                if len(raw) < 1024:
                    continue  # small constants stay inside the graph
                stored = offsets.get(tensor.name)
                if stored is None or stored[2] != raw[:64] + len(raw).to_bytes(8, "little"):
                    pad = (-data.tell()) % 64
                    data.write(b"\0" * pad)
                    stored = (data.tell(), len(raw), raw[:64] + len(raw).to_bytes(8, "little"))
                    data.write(raw)
                    offsets[tensor.name] = stored
                for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data"):
                    tensor.ClearField(field)
                del tensor.external_data[:]
                for key, value in (("location", WEIGHTS), ("offset", str(stored[0])), ("length", str(stored[1]))):
                    entry = tensor.external_data.add()
                    entry.key, entry.value = key, value
                tensor.data_location = onnx.TensorProto.EXTERNAL
            onnx.save(graph, str(folder / f"{name}.onnx"))


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
