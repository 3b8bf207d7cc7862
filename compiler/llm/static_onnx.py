"""The static programs of a decoder as ONNX graphs: ``prefill`` (a chunk of tokens) and ``decode`` (one token),
each the static-cache step of `compiler.llm.static` with the cache as explicit input and output, exported with
``torch.onnx.export``; and the one weights file both graphs point into. For the runtimes whose NPU providers
compile ONNX graphs of fixed shapes (ONNX Runtime's, QNN's).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Mapping

import onnx

from compiler.errors import LowerError

DEFAULT_CHUNK = 32


def cache_names(spec) -> tuple[list[str], list[str]]:
    """The programs' cache inputs (past.<layer>.key/value) and outputs (present.<layer>.key/value)."""
    past = [f"past.{i}.{kind}" for i in range(spec.layers) for kind in ("key", "value")]
    return past, [name.replace("past", "present") for name in past]


def export_programs(model, context: int, chunk: int) -> dict[str, onnx.ModelProto]:
    """{"prefill": graph over ``chunk`` tokens, "decode": graph over one}, each over a ``context``-token cache."""
    import torch

    from compiler.llm.static import cache_shapes, functional_step

    spec = model.spec
    step = functional_step(model.torch_model(), context)
    past = tuple(torch.zeros(shape) for shape in cache_shapes(spec, context))
    past_names, present_names = cache_names(spec)
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
    return graphs


def save_sharing_weights(graphs: Mapping[str, onnx.ModelProto], folder: Path, weights: str,
                         suffix: str = ".onnx") -> list[str]:
    """Each graph as ``folder/<name><suffix>``, their large initializers in one data file ``weights``; an
    initializer the graphs share (same name and bytes) is stored once and referenced from each. The files
    written, relative to ``folder``."""
    offsets: dict[str, tuple[int, int, bytes]] = {}
    written = [weights]
    with open(folder / weights, "wb") as data:
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
                for key, value in (("location", weights), ("offset", str(stored[0])), ("length", str(stored[1]))):
                    entry = tensor.external_data.add()
                    entry.key, entry.value = key, value
                tensor.data_location = onnx.TensorProto.EXTERNAL
            onnx.save(graph, str(folder / f"{name}{suffix}"))
            written.append(f"{name}{suffix}")
    return written


class SessionPairRunner:
    """The prefill and decode programs as two ONNX Runtime sessions (any provider), fed in chunks
    (`compiler.llm.static.ChunkedRunner`): a `DecoderRunner` over ``layout`` (chunk, context, cache_shapes)."""

    def __init__(self, sessions: Mapping[str, object], layout: Mapping, description: str) -> None:
        import numpy as np

        from compiler.llm.static import ChunkedRunner

        shapes = [tuple(s) for s in layout["cache_shapes"]]
        self.description = description
        self._chunked = ChunkedRunner(_session_step(sessions["prefill"]), _session_step(sessions["decode"]),
                                      layout["chunk"], lambda: [np.zeros(s, np.float32) for s in shapes],
                                      layout["context"], description)

    def generate(self, ids, new_tokens, stop=(), on_token=None):
        return self._chunked.generate(ids, new_tokens, stop, on_token)

    def logits(self, ids):
        return self._chunked.logits(ids)

    def set_threads(self, threads: int) -> bool:
        return False  # the sessions size their pools at start-up, and the CPUs are pinned


def _session_step(session):
    """A `compiler.llm.static.Step` over one program's session: inputs in the program's order, out (logits, cache)."""
    inputs = [i.name for i in session.get_inputs()]

    def run(ids, positions, past):
        out = session.run(None, dict(zip(inputs, [ids, positions, *past])))
        return out[0], out[1:]

    return run
