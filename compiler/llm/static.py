"""The static-cache form of a decoder: one step program over a fixed-size KV cache, the prompt in chunks.

For runtimes that need static shapes (TVM, NPUs' providers, Core ML) the decoder is exported with
transformers' `StaticCache` whose layers update out of place (`torch.scatter` at ``cache_position``), so
the cache is the step's explicit input and output:

    step(input_ids[1, T], cache_position[T], k_0, v_0, ..., k_L-1, v_L-1) -> (logits[1, T, V], k_0', v_0', ...)

with every cache ``[1, kv_heads, context, head_dim]``. Two programs share the weights: ``prefill`` (T =
the chunk) and ``decode`` (T = 1). A prompt is fed in chunks (the last one padded; padded positions are
written past the prompt and overwritten before they are ever attended to). Sliding-window layers keep a
full-length cache here and the attention mask does the windowing: correct, at the memory of a full cache.

`ChunkedRunner` drives such a pair of step functions, for any runtime, as a `DecoderRunner`.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np

from targets.backend import Generation

#: step(ids int64 [1, T], positions int64 [T], past) -> (logits [1, T, V], present); the runtime keeps ``past``
Step = Callable[[np.ndarray, np.ndarray, list], tuple[np.ndarray, list]]


def cache_shapes(spec, context: int) -> list[tuple[int, ...]]:
    """k_0, v_0, k_1, v_1, ... shapes of the static cache."""
    shapes = []
    for _ in range(spec.layers):
        shapes += [(1, spec.kv_heads, context, spec.head_dim), (1, spec.kv_heads, context, spec.value_head_dim)]
    return shapes


def functional_step(model, context: int):
    """The torch module computing one step with the cache as explicit input and output."""
    import torch
    from transformers import StaticCache
    from transformers.cache_utils import StaticLayer

    class OutOfPlaceLayer(StaticLayer):
        def __init__(self, keys, values, position) -> None:
            super().__init__(max_cache_len=context)
            self.keys, self.values, self.position = keys, values, position
            # transformers builds the attention mask from the cache's length ("query offset"), not from
            # cache_position: this step's first position is that length
            self.cumulative_length = position[0]
            self.max_batch_size, self.num_heads = keys.shape[:2]
            self.k_head_dim, self.v_head_dim = keys.shape[-1], values.shape[-1]
            self.dtype, self.device = keys.dtype, keys.device
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            position = self.position  # this step's cache_position (transformers' own layer counts calls instead)
            self.keys = torch.scatter(self.keys, 2, position.view(1, 1, -1, 1).expand(key_states.shape), key_states)
            self.values = torch.scatter(self.values, 2, position.view(1, 1, -1, 1).expand(value_states.shape),
                                        value_states)
            return self.keys, self.values

    class Step(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.config = model.config.get_text_config()

        def forward(self, input_ids, cache_position, *past):
            cache = StaticCache(config=self.config, max_cache_len=context)
            cache.layers = [OutOfPlaceLayer(past[2 * i], past[2 * i + 1], cache_position)
                            for i in range(len(past) // 2)]
            logits = self.model(input_ids=input_ids, cache_position=cache_position, attention_mask=None,
                                past_key_values=cache, use_cache=True).logits
            out = [logits]
            for layer in cache.layers:
                out += [layer.keys, layer.values]
            return tuple(out)

    return Step()


def export_step(decoder, tokens: int, context: int):
    """`torch.export` of the step at ``tokens`` tokens per call (the cache's shapes are static)."""
    import torch

    step = functional_step(decoder.torch_model(), context)
    past = tuple(torch.zeros(shape) for shape in cache_shapes(decoder.spec, context))
    with torch.no_grad():
        return torch.export.export(step, (torch.zeros(1, tokens, dtype=torch.long),
                                          torch.arange(tokens, dtype=torch.long), *past), strict=True)


class ChunkedRunner:
    """Greedy generation and teacher-forced logits over a static-cache prefill/decode pair."""

    def __init__(self, prefill: Step, decode: Step, chunk: int, empty_cache: Callable[[], list], context: int,
                 description: str, padded: bool = True) -> None:
        self._prefill, self._decode, self._empty = prefill, decode, empty_cache
        self.chunk, self.context, self.description = chunk, context, description
        self.padded = padded  # False for a program whose token count is dynamic (up to the chunk)

    def _feed(self, ids: Sequence[int], past: list) -> tuple[np.ndarray, list]:
        """Run the prompt in chunks; logits for every prompt position ([len(ids), V]) and the filled cache."""
        if len(ids) > self.context:
            raise ValueError(f"{len(ids)} tokens exceed the artifact's context of {self.context}")
        rows = []
        for start in range(0, len(ids), self.chunk):
            part = list(ids[start:start + self.chunk])
            width = self.chunk if self.padded else len(part)
            padded = np.zeros((1, width), np.int64)
            padded[0, :len(part)] = part
            positions = np.arange(start, start + width, dtype=np.int64)
            positions = np.minimum(positions, self.context - 1)  # a padded tail never writes past the cache
            logits, past = self._prefill(padded, positions, past)
            rows.append(np.asarray(logits)[0, :len(part)])
        return np.concatenate(rows), past

    def generate(self, ids: Sequence[int], new_tokens: int, stop: Sequence[int] = (),
                 on_token: Callable[[int], None] | None = None) -> Generation:
        start = time.perf_counter()
        logits, past = self._feed(ids, self._empty())
        last = logits[-1]
        tokens: list[int] = []
        times: list[float] = []
        position = len(ids)
        while len(tokens) < new_tokens:
            token = int(np.argmax(last))
            now = time.perf_counter()
            times.append(now - start)
            start = now
            tokens.append(token)
            if on_token is not None:
                on_token(token)
            if token in stop or len(tokens) == new_tokens or position >= self.context:
                break
            step_logits, past = self._decode(np.array([[token]], np.int64), np.array([position], np.int64), past)
            last = np.asarray(step_logits)[0, -1]
            position += 1
        return Generation(tuple(tokens), times[0] if times else 0.0, tuple(times[1:]))

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        return self._feed(ids, self._empty())[0].astype(np.float32)


def stateful_step(model, context: int):
    """The step with the cache as in-place buffers (``key_cache_i`` / ``value_cache_i``): for runtimes that hold
    the cache as state across calls (Core ML states), ``step(input_ids[1, T], cache_position[T]) -> logits``."""
    import torch
    from transformers import StaticCache
    from transformers.cache_utils import StaticLayer

    class InPlaceLayer(StaticLayer):
        def __init__(self, keys, values, position) -> None:
            super().__init__(max_cache_len=context)
            self.keys, self.values, self.position = keys, values, position
            self.max_batch_size, self.num_heads = keys.shape[:2]
            self.k_head_dim, self.v_head_dim = keys.shape[-1], values.shape[-1]
            self.dtype, self.device = keys.dtype, keys.device
            self.is_initialized = True
            self.cumulative_length = position[0]  # the mask's query offset (see `functional_step`)

        def update(self, key_states, value_states, *args, **kwargs):
            self.keys.index_copy_(2, self.position, key_states)
            self.values.index_copy_(2, self.position, value_states)
            return self.keys, self.values

    class Step(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.config = model.config.get_text_config()
            shapes = cache_shapes_of(self.config, context)
            for i in range(len(shapes) // 2):
                self.register_buffer(f"key_cache_{i}", torch.zeros(shapes[2 * i]), persistent=False)
                self.register_buffer(f"value_cache_{i}", torch.zeros(shapes[2 * i + 1]), persistent=False)
            self.layers = len(shapes) // 2

        def forward(self, input_ids, cache_position):
            cache = StaticCache(config=self.config, max_cache_len=context)
            cache.layers = [InPlaceLayer(getattr(self, f"key_cache_{i}"), getattr(self, f"value_cache_{i}"),
                                         cache_position) for i in range(self.layers)]
            return self.model(input_ids=input_ids, cache_position=cache_position, attention_mask=None,
                              past_key_values=cache, use_cache=True).logits

    return Step()


def cache_shapes_of(config, context: int) -> list[tuple[int, ...]]:
    """`cache_shapes` from a transformers config (the same widths the front end reads into a DecoderSpec)."""
    from compiler.frontend.huggingface import decoder_spec

    return cache_shapes(decoder_spec(config.to_dict(), "", {}), context)
