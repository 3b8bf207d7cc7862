"""Vision-language models as data: the vision part's layout, read from a Hugging Face folder before any weight.

A vision-language model (VLM) is a text decoder (`targets.decoder.DecoderSpec`) fed image features: a vision
encoder turns an image into patches' features, a projector (merger) maps them to the decoder's width, and each
image takes a run of placeholder tokens in the prompt. `VisionSpec` says what the memory plan and the prompt
checks need: the encoder's weights, how many tokens an image takes at most, and the processor's pixel limits.
`VisionRecord` is what a manifest says of the vision part of an artifact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

#: the placeholder a chipfit prompt marks each image with (``chipfit generate --prompt "<image> Describe it"``);
#: each family's own markers (vision start/end, pad runs) are written by chipfit and the runtime, never by hand
IMAGE_PLACEHOLDER = "<image>"


@dataclass(frozen=True)
class VisionSpec:
    family: str  # config.model_type, e.g. "qwen2_5_vl"
    encoder_parameters: int  # vision encoder + projector, from the checkpoint's tensor shapes
    hidden_size: int  # the encoder's width
    layers: int
    patch_size: int
    merge_size: int  # patches merged into one image token per side (2: a 2x2 block is one token)
    min_pixels: int  # the processor's bounds on an image's area after resizing (preprocessor_config.json)
    max_pixels: int
    image_token_id: int  # the placeholder token the decoder's embedding is replaced at
    resample: int = 3  # the processor's resampling filter (PIL's numbering: 2 bilinear, 3 bicubic)

    @property
    def fixed_size(self) -> bool:
        """Every image is resized to one size (so takes one number of tokens)."""
        return self.min_pixels == self.max_pixels

    @property
    def pixels_per_token(self) -> int:
        return (self.patch_size * self.merge_size) ** 2

    @property
    def max_image_tokens(self) -> int:
        """Tokens one image takes in the context at most (the processor shrinks larger images to this)."""
        return self.max_pixels // self.pixels_per_token

    @property
    def min_image_tokens(self) -> int:
        return max(1, self.min_pixels // self.pixels_per_token)

    def encoder_bytes(self, precision: str) -> int:
        return int(self.encoder_parameters * {"fp32": 4, "fp16": 2}.get(precision, 2))


@dataclass(frozen=True)
class VisionRecord:
    """The vision part of a VLM artifact, as its manifest records it."""

    spec: VisionSpec
    files: Mapping[str, str]  # part -> file: "decoder" -> model.gguf, "vision" -> mmproj.gguf
    encoder_precision: str  # what the vision encoder's weights were written at
    #: what an application must set so the runtime sizes images as the model's processor does (llama.cpp's mtmd:
    #: image_min_tokens / image_max_tokens)
    runtime_settings: Mapping[str, Any]
    image_tokens_per_image: int  # at most, in the context
    images_per_context: int  # images of the largest size the planned context holds beside no text
