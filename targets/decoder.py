"""Decoder language models as data: the layout that decides memory and speed, and the memory-fit plan.

`DecoderSpec` is what the front end reads from a Hugging Face model directory (no weights loaded):
layers, widths, heads, the KV-cache layout (layers x kv_heads x head_dim, sliding-window layers),
vocabulary and positions. `plan_memory` turns it into bytes for a context and a precision and says
whether a target holds it; the profiler's roofline uses the same figures (bytes read per token).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from targets.vision import VisionRecord

#: bytes per weight element by precision (int4 adds one fp32 scale per block: see `weight_bytes`)
_WEIGHT_BYTES = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "int4": 0.5}


@dataclass(frozen=True)
class DecoderSpec:
    architecture: str  # the Hugging Face class, e.g. "LlamaForCausalLM"
    model_type: str  # e.g. "llama"
    layers: int
    hidden_size: int
    intermediate_size: int
    heads: int
    kv_heads: int
    head_dim: int  # of a key (and query)
    value_head_dim: int  # of a value (equal to head_dim except in latent-attention models such as MiniCPM3)
    vocab_size: int
    max_positions: int
    sliding_window: int | None
    sliding_layers: tuple[int, ...]  # layer indices whose attention (and cache) is windowed
    tied_embeddings: bool
    parameters: int  # counted from the checkpoint's tensor shapes
    embedding_parameters: int  # the token embedding (and an untied lm_head counts again in `parameters`)
    rope: Mapping[str, Any]

    def kv_bytes(self, context: int, bytes_per_element: float, windowed: bool = True) -> int:
        """Keys and values of every layer at ``context`` tokens (sliding layers hold at most their window when
        the cache is ``windowed``)."""
        tokens = sum(min(context, self.sliding_window) if (windowed and self.sliding_window and i in self.sliding_layers)
                     else context for i in range(self.layers))
        # a block-quantized cache (llama.cpp's Q8_0: 34 bytes per 32 values) has a fractional size per element
        return round(self.kv_heads * (self.head_dim + self.value_head_dim) * bytes_per_element * tokens)

    def kv_bytes_per_token(self, bytes_per_element: float) -> int:
        return round(self.layers * self.kv_heads * (self.head_dim + self.value_head_dim) * bytes_per_element)

    def weight_bytes(self, precision: str, block_size: int = 32, embeddings: str = "fp32") -> int:
        """Weights at ``precision`` (matmuls, lm_head included); the token embedding at ``embeddings``."""
        matmul = self.parameters - self.embedding_parameters if not self.tied_embeddings else self.parameters
        bytes_ = matmul * _WEIGHT_BYTES[precision]
        if precision == "int4":
            bytes_ += matmul / block_size * 4  # one fp32 scale per block
        elif precision == "int8":
            bytes_ += matmul / block_size * 4
        if not self.tied_embeddings:
            bytes_ += self.embedding_parameters * _WEIGHT_BYTES[embeddings]
        return int(bytes_)

    def workspace_bytes(self, chunk: int, context: int, bytes_per_element: int = 4) -> int:
        """Activations of one prefill chunk: hidden and MLP states, attention scores over the context, and the
        chunk's logits (what a runtime keeps live at once, at most)."""
        hidden = chunk * (2 * self.hidden_size + 2 * self.intermediate_size)
        scores = chunk * self.heads * context
        logits = chunk * self.vocab_size
        return (hidden + scores + logits) * bytes_per_element


@dataclass(frozen=True)
class MemoryPlan:
    context: int
    precision: str
    weight_bytes: int
    kv_cache_bytes: int
    kv_bytes_per_element: float
    workspace_bytes: int
    total_bytes: int
    capacity_bytes: int | None  # None: the target's memory is unknown
    fits: bool
    max_context_that_fits: int | None
    basis: str  # how the figures were had ("estimated from the checkpoint" / "artifact files")


def plan_memory(spec: DecoderSpec, context: int, precision: str, capacity_bytes: int | None, *,
                kv_bytes_per_element: float = 4, chunk: int = 128, weight_bytes: int | None = None,
                block_size: int = 32, windowed: bool = True,
                basis: str = "estimated from the checkpoint's shapes") -> MemoryPlan:
    """Weights + KV cache at ``context`` + workspace, against the target's capacity; the largest context that fits."""
    weights = weight_bytes if weight_bytes is not None else spec.weight_bytes(precision, block_size)

    def total(tokens: int) -> int:
        return (weights + spec.kv_bytes(tokens, kv_bytes_per_element, windowed)
                + spec.workspace_bytes(min(chunk, tokens), tokens))

    need = total(context)
    largest = None
    if capacity_bytes is not None and total(1) <= capacity_bytes:
        lo, hi = 1, spec.max_positions
        while lo < hi:  # total() grows with the context: the largest one within capacity
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if total(mid) <= capacity_bytes else (lo, mid - 1)
        largest = lo
    return MemoryPlan(context, precision, weights, spec.kv_bytes(context, kv_bytes_per_element, windowed),
                      kv_bytes_per_element,
                      spec.workspace_bytes(min(chunk, context), context), need, capacity_bytes,
                      capacity_bytes is None or need <= capacity_bytes, largest, basis)


@dataclass(frozen=True)
class LanguageModelRecord:
    """What a manifest says of a decoder LM artifact."""

    decoder: DecoderSpec
    context: int
    #: "dynamic": past length symbolic (ONNX Runtime GenAI); "static": a fixed-size cache, the prompt in chunks
    cache_form: str
    prefill_chunk: int | None
    programs: tuple[str, ...]  # e.g. ("prefill", "decode"), or ("decoder",) for one graph taking both
    runtime: str  # what runs it: "onnxruntime-genai", "tvm-relax-vm", "coreml-stateful"
    memory_plan: MemoryPlan
    weight_precisions: Mapping[str, str]  # embedding / matmuls / lm_head -> precision actually written
    tokenizer_files: tuple[str, ...]
    trust_remote_code: bool
    generation: Mapping[str, Any]  # the model's generation defaults (eos, sampling) as the runtime got them
    windowed_cache: bool  # sliding-window layers hold only their window
    #: other forms the artifact carries (name, cache form, programs, runtime, chunk), each verified on its own
    other_forms: tuple[Mapping[str, Any], ...] = ()
    #: where the backend offers several weight quantization methods at this precision: each one's perplexity on
    #: held-out text, agreement and cosine, and the one that shipped (`compiler.build.kinds.decoder`)
    weight_choice: Mapping[str, Any] | None = None
    #: vision-language models: the vision part (its file, precision, the image-token budget) beside the decoder
    vision: VisionRecord | None = None
