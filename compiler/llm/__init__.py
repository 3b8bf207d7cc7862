"""Decoder language models: what the front end gives the build for a Hugging Face model directory.

A `DecoderModel` is the decoder's description (`targets.decoder.DecoderSpec`: layout, KV cache, vocabulary),
its folder (weights, tokenizer, generation defaults) and the float reference: transformers' own eager
model on the same weights, which every artifact's generated tokens are verified against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from targets.decoder import DecoderSpec


@dataclass(frozen=True)
class DecoderModel:
    name: str
    source: str  # the model folder
    source_digest: str
    spec: DecoderSpec
    directory: Path
    tokenizer_file: Path
    trust_remote_code: bool
    config: Mapping[str, Any] = field(repr=False, compare=False)
    generation: Mapping[str, Any] = field(repr=False, compare=False)
    _loaded: dict = field(default_factory=dict, repr=False, compare=False)
    source_kind: str = "huggingface"

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        eos = self.generation.get("eos_token_id", self.config.get("eos_token_id"))
        return tuple(eos) if isinstance(eos, list) else ((eos,) if eos is not None else ())

    def torch_model(self):
        """transformers' model on this folder's weights, float32, eval mode (loaded once)."""
        if "model" not in self._loaded:
            import torch
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(self.directory, dtype=torch.float32, local_files_only=True,
                                                         trust_remote_code=self.trust_remote_code)
            self._loaded["model"] = model.eval()
        return self._loaded["model"]

    def tokenizer(self):
        if "tokenizer" not in self._loaded:
            from tokenizers import Tokenizer

            self._loaded["tokenizer"] = Tokenizer.from_file(str(self.tokenizer_file))
        return self._loaded["tokenizer"]

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer().encode(text).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer().decode(list(ids))

    def reference_logits(self, ids: Sequence[int]) -> np.ndarray:
        """Next-token logits at every position of ``ids`` ([len(ids), vocab]), from transformers eager."""
        import torch

        with torch.no_grad():
            out = self.torch_model()(torch.tensor([list(ids)], dtype=torch.long), use_cache=False)
        return out.logits[0].float().numpy()

    def reference_greedy(self, ids: Sequence[int], new_tokens: int, stop: Sequence[int] = ()
                         ) -> tuple[list[int], np.ndarray]:
        """Greedy continuation of ``ids`` by transformers eager (its own KV cache): plain argmax, ``new_tokens``
        tokens or fewer if one in ``stop`` comes first, and the logits each token was chosen from."""
        import torch

        model = self.torch_model()
        tokens: list[int] = []
        rows = []
        with torch.no_grad():
            out = model(input_ids=torch.tensor([list(ids)], dtype=torch.long), use_cache=True)
            while True:
                logits = out.logits[0, -1].float()
                token = int(logits.argmax())
                tokens.append(token)
                rows.append(logits.numpy())
                if len(tokens) == new_tokens or token in stop:
                    break
                out = model(input_ids=torch.tensor([[token]], dtype=torch.long), past_key_values=out.past_key_values,
                            use_cache=True)
        return tokens, np.stack(rows)
