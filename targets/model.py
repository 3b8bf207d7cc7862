"""The models a build hands its passes and backends: a traced graph, or a decoder language model.

They live in the bottom layer because the backend protocol (`targets.backend`) takes them: a backend imports
them from here, and nothing in ``targets/`` imports the compiler that makes them.

* `TracedModel`: a model traced into a graph (an ONNX model, and the torch program where the source is PyTorch),
  with the float reference artifacts are verified against.
* `DecoderModel`: a Hugging Face decoder LM folder: its description (`targets.decoder.DecoderSpec`: layout, KV
  cache, vocabulary), weights, tokenizer and generation defaults, and transformers' own eager model on the same
  weights as the reference every artifact's generated tokens are verified against.
* `VisionLanguageModel`: a decoder LM folder with a vision encoder (`targets.vision.VisionSpec`) and the image
  processor's settings; its text decoder is read, planned and verified as a `DecoderModel`'s is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from targets.decoder import DecoderSpec
from targets.export import ExportRecord
from targets.signature import Signature
from targets.vision import VisionSpec

if TYPE_CHECKING:
    import onnx

#: Runs the float reference: input name -> array in, output name -> array out.
ReferenceFn = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class TracedModel:
    """A model traced into a graph.

    ``onnx_model`` is the portable form every ONNX-consuming backend lowers;
    ``exported_program`` is kept when the source is PyTorch, for backends that
    consume the torch program (TVM's torch importer, Core ML). ``reference``
    computes the float outputs that artifacts are verified against.
    """

    name: str
    source: str  # file path, "example", or "<module ClassName>"
    source_kind: str  # "pytorch", "onnx" or "huggingface"
    source_digest: str
    signature: Signature
    onnx_model: onnx.ModelProto = field(repr=False)
    reference: ReferenceFn = field(repr=False, compare=False)
    exported_program: Any = field(default=None, repr=False, compare=False)
    #: Bundled samples (example model only): input name -> batch of samples, plus labels.
    samples: Mapping[str, np.ndarray] | None = field(default=None, repr=False, compare=False)
    #: Precision of ``onnx_model`` after the precision stage ("fp32" as traced), and the passes that made it.
    graph_precision: str = "fp32"
    passes: tuple[Mapping[str, Any], ...] = ()
    #: a Hugging Face folder exported by optimum: how (the manifest's ``export``)
    export: ExportRecord | None = None
    #: turns a user's raw sample files (sentences, images, WAVs) into the inputs, with the model's own processor:
    #: path -> (input name -> batch of samples, where they came from); None where samples are arrays only
    preprocess: Callable[[Path], tuple[dict[str, np.ndarray], str]] | None = field(default=None, repr=False,
                                                                                   compare=False)



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
        eos = self.generation.get("eos_token_id", self.config.get("eos_token_id",
                                                                    (self.config.get("text_config") or {}).get("eos_token_id")))
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


@dataclass(frozen=True)
class VisionLanguageModel(DecoderModel):
    """A decoder LM that also reads images: ``spec`` is its text decoder's layout, ``vision`` its vision part's.
    transformers' image-text-to-text class on the same weights is the reference (`torch_model`)."""

    vision: VisionSpec | None = None
    processor_files: tuple[str, ...] = ()  # preprocessor_config.json and the like, copied into artifacts

    def __post_init__(self) -> None:
        if self.vision is None:
            raise ValueError("a VisionLanguageModel needs its VisionSpec")

    def loaded(self, key: str, make: Callable[[], Any]) -> Any:
        """``make()``, once per model: what the reference loads besides the model (the family's image processor)."""
        if key not in self._loaded:
            self._loaded[key] = make()
        return self._loaded[key]

    def torch_model(self):
        if "model" not in self._loaded:
            import torch
            from transformers import AutoModelForImageTextToText

            model = AutoModelForImageTextToText.from_pretrained(self.directory, dtype=torch.float32,
                                                                local_files_only=True,
                                                                trust_remote_code=self.trust_remote_code)
            self._loaded["model"] = model.eval()
        return self._loaded["model"]
