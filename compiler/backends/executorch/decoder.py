"""Decoder LMs for ExecuTorch: one ``forward`` method over a KV cache held in the program, delegated to XNNPACK.

The step with the cache as in-place buffers (`compiler.llm.static.stateful_step`) is exported once with the
token count dynamic (1 .. the prefill chunk), so the same method prefills a chunk and decodes a token, and the
cache buffers are the program's mutable state between calls, as ExecuTorch's own LLM export lays a decoder out.
Weights as ExecuTorch's LLM export writes them: int4 is torchao's ``8da4w`` (int8 dynamic activations x int4
weights in groups, XNNPACK's qd8-f32-qb4w GEMM) with a 4-bit grouped embedding table, int8 ``8da8w`` per output
channel with an 8-bit per-row table (ExecuTorch's `EmbeddingQuantHandler`: ``quantized_decomposed.embedding_*``,
run by ExecuTorch's quantized kernels outside the delegate). The program runs here as an app loads it, through
ExecuTorch's runtime.
"""

from __future__ import annotations

import collections
import copy
import shutil
from pathlib import Path
from typing import Any, Mapping

from compiler.backends import DecoderForm, Lowered
from compiler.errors import LowerError
from targets.signature import Signature, TensorSpec
from targets.spec import TargetSpec

PROGRAM = "decoder.pte"
DEFAULT_CHUNK = 64
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")
#: what torchao writes for each precision (torchao.quantization configs, the names ExecuTorch's export uses)
SCHEMES = {"fp32": "fp32", "int8": "8da8w (int8 dynamic activations, int8 weights per channel); embedding int8 per row",
           "int4": "8da4w (int8 dynamic activations, int4 weights per group of {block}); embedding int4 per group "
                   "of {block}"}


def _quantize(torch_model, precision: str, block: int):
    """A quantized copy of ``torch_model`` (embedding table, linear layers, lm_head); the original stays the
    reference."""
    if precision == "fp32":
        return torch_model
    import contextlib
    import io

    import executorch.kernels.quantized  # noqa: F401  (registers quantized_decomposed.embedding_* for export)
    import torch
    from executorch.examples.models.llama.source_transformation.quantize import EmbeddingQuantHandler
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup

    quantized = copy.deepcopy(torch_model)
    bits = 4 if precision == "int4" else 8
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per table
        EmbeddingQuantHandler(quantized, bitwidth=bits, group_size=block if bits == 4 else 0,
                              packed=bits == 4).quantized_model()
    config = (Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(block))
              if precision == "int4" else
              Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0)))
    quantize_(quantized, config)  # nn.Linear modules: lm_head too (a tied one gets its own copy)
    return quantized


def lower_decoder(model, target: TargetSpec, precision: str, workdir: Path, context: int, chunk: int | None,
                  block: int, options: Mapping[str, Any]) -> Lowered:
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from compiler.llm.static import stateful_step

    spec = model.spec
    chunk = max(1, min(chunk or DEFAULT_CHUNK, context - 1))
    if precision == "int4":
        import torch

        widths = sorted({m.in_features for m in model.torch_model().modules() if isinstance(m, torch.nn.Linear)})
        if any(width % block for width in widths):
            raise LowerError(f"int4 groups of {block} do not divide every input width of {spec.architecture}'s "
                             f"linear layers ({', '.join(map(str, widths))}); give --block-size a divisor of them")
    try:
        with torch.no_grad():
            step = stateful_step(_quantize(model.torch_model(), precision, block), context)
            tokens = torch.export.Dim("tokens", min=1, max=chunk)
            sample = min(4, chunk)
            # non-strict: torchao's quantized weights are tensor subclasses, which strict (dynamo) export rejects
            program = torch.export.export(step, (torch.zeros(1, sample, dtype=torch.long),
                                                 torch.arange(sample, dtype=torch.long)),
                                          dynamic_shapes=({1: tokens}, {0: tokens}), strict=False)
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
            graph = edge.exported_program().graph_module.graph
            executable = edge.to_executorch()
    except Exception as exc:
        raise LowerError(f"ExecuTorch could not lower {spec.architecture}'s decoder at {precision}: "
                         f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    calls = [n for n in graph.nodes if n.op == "call_function"]
    delegated = sum(1 for n in calls if "executorch_call_delegate" in str(n.target))
    outside = collections.Counter(str(getattr(n.target, "__name__", n.target)).split(".")[0] for n in calls
                                  if "executorch_call_delegate" not in str(n.target) and "getitem" not in str(n.target))
    (workdir / PROGRAM).write_bytes(executable.buffer)
    copied = []
    for name in TOKENIZER_FILES:
        if (model.directory / name).is_file():
            shutil.copy2(model.directory / name, workdir / name)
            copied.append(name)
    scheme = SCHEMES[precision].format(block=block)
    matmuls = {"fp32": "fp32", "int8": "int8", "int4": f"int4 (groups of {block})"}[precision]
    return Lowered(
        files=(PROGRAM, *copied),
        signature=Signature((TensorSpec("input_ids", (1, "tokens"), "int64"),
                             TensorSpec("cache_position", ("tokens",), "int64")),
                            (TensorSpec("logits", (1, "tokens", spec.vocab_size), "float32"),)),
        options={**dict(options), "decoder": {"chunk": chunk, "context": context, "weights": scheme}},
        passes=({"name": "static-cache-step-export", "programs": {"forward": f"1..{chunk} tokens"}, "context": context,
                 "cache": "mutable buffers in the program"},
                *(({"name": "torchao.quantize_", "scheme": scheme},) if precision != "fp32" else ()),
                {"name": "executorch.to_edge_transform_and_lower", "partitioner": "XnnpackPartitioner",
                 "delegate_calls": delegated, "outside_delegates": dict(sorted(outside.items()))}),
        notes=("the embedding lookup runs in ExecuTorch's quantized kernels, outside XNNPACK",)
        if precision != "fp32" else (),
        structure={"format": "ExecuTorch program (.pte)", "methods": ["forward"], "delegate_calls": delegated,
                   "outside_delegates": dict(sorted(outside.items())), "weights": scheme},
        decoder=DecoderForm(cache_form="static", programs=("forward",), runtime="executorch-xnnpack",
                            context=context, kv_bytes_per_element=4, prefill_chunk=chunk,
                            weight_precisions={"embedding": matmuls if precision == "int4" else precision,
                                               "matmuls": matmuls, "lm_head": matmuls},
                            tokenizer_files=tuple(copied), windowed_cache=False,
                            generation=dict(model.generation)),
    )


class ExecuTorchDecoderRunner:
    """The program's ``forward`` in ExecuTorch's runtime: the prompt in chunks of up to the program's bound, then
    one token per call; the cache stays in the method between calls (a new prompt overwrites it from position 0,
    and the mask hides what lies beyond)."""

    def __init__(self, program: Path, chunk: int, context: int, threads: int) -> None:
        import executorch
        # the quantized embedding's kernels (quantized_decomposed::embedding_*bit) register on import: without
        # them a quantized program fails to load in a process that did not lower it
        import executorch.kernels.quantized  # noqa: F401
        from executorch.runtime import Runtime

        from compiler.llm.static import ChunkedRunner

        self._method = Runtime.get().load_program(program).load_method("forward")
        self.threads = threads
        self.set_threads(threads)
        version = getattr(executorch, "__version__", "")
        self.description = (f"executorch {version} runtime, XNNPACK delegate, {threads} threads on this host "
                            f"({program.name}: up to {chunk} tokens per call)").replace("executorch  ", "executorch ")
        self._chunked = ChunkedRunner(self._step, self._step, chunk, list, context, self.description, padded=False)

    def _step(self, ids, positions, past):
        import torch

        self._reset_pool()
        out = self._method.execute([torch.from_numpy(ids), torch.from_numpy(positions)])
        return out[0].numpy(), past

    def _reset_pool(self) -> None:
        # XNNPACK runs on ExecuTorch's one process-wide pool; another runner in this process may have resized it
        from executorch.extension.pybindings import portable_lib

        if portable_lib._threadpool_get_thread_count() != self.threads:
            portable_lib._unsafe_reset_threadpool(self.threads)

    def set_threads(self, threads: int) -> bool:
        self.threads = max(1, threads)
        self._reset_pool()
        return True

    def generate(self, ids, new_tokens, stop=(), on_token=None):
        return self._chunked.generate(ids, new_tokens, stop, on_token)

    def logits(self, ids):
        return self._chunked.logits(ids)
