"""What differs between vision-language families: how their folder describes the vision part, how transformers'
reference is fed an image, and how a prompt's image placeholder becomes the family's tokens.

Each `VisionFamily` is written from the family's own transformers code (its processor and model classes) and
checked against the runtimes that run it (tests/compiler/vlm/test_vision_language.py). A family not listed here is refused by the front
end by name (`compiler.frontend.huggingface`), never read as a text decoder with its vision tower left out.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from compiler.errors import UsageError
from targets.vision import IMAGE_PLACEHOLDER, VisionSpec

PREPROCESSOR = "preprocessor_config.json"


@dataclass(frozen=True)
class VisionFamily:
    name: str  # config.model_type
    #: the prefixes of the vision encoder's and projector's tensors in the checkpoint
    vision_prefixes: tuple[str, ...]
    read_spec: Callable[[Mapping[str, Any], Mapping[str, Any], int], VisionSpec]
    #: the image processor transformers pairs with the family (its PIL variant: no torchvision needed)
    image_processor: str
    #: (height, width, spec) -> the size the family's processor resizes an image to
    processed_size: Callable[[int, int, VisionSpec], tuple[int, int]]
    #: (config, token string of an id, image tokens) -> the text the family's processor writes for one image
    image_text: Callable[[Mapping[str, Any], Callable[[int], str], int], str]
    #: (input ids tensor, the image processor's output) -> what the model's forward takes besides input_ids
    model_inputs: Callable[[Any, Mapping[str, Any], int], dict[str, Any]]
    #: (the transformers model, the image processor's output) -> the image features the decoder receives
    features: Callable[[Any, Mapping[str, Any]], Any]

    def processor(self, folder: Path):
        module, _, name = self.image_processor.rpartition(".")
        return getattr(importlib.import_module(module), name).from_pretrained(str(folder), local_files_only=True)


# -- Qwen2.5-VL: images sized freely within pixel bounds (multiples of 28), M-RoPE positions --------------------
def _qwen_vl_spec(config: Mapping[str, Any], pre: Mapping[str, Any], parameters: int) -> VisionSpec:
    vision = config["vision_config"]
    size = pre.get("size") or {}
    return VisionSpec(
        family=str(config["model_type"]), encoder_parameters=parameters, hidden_size=int(vision["hidden_size"]),
        layers=int(vision.get("depth") or vision.get("num_hidden_layers")),
        patch_size=int(pre.get("patch_size") or vision.get("patch_size", 14)),
        merge_size=int(pre.get("merge_size") or vision.get("spatial_merge_size", 2)),
        min_pixels=int(pre.get("min_pixels") or size.get("shortest_edge") or 56 * 56),
        max_pixels=int(pre.get("max_pixels") or size.get("longest_edge") or 28 * 28 * 1280),
        image_token_id=int(config["image_token_id"]), resample=int(pre.get("resample", 3)))


def _qwen_vl_size(height: int, width: int, spec: VisionSpec) -> tuple[int, int]:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    try:
        return smart_resize(height, width, spec.patch_size * spec.merge_size, spec.min_pixels, spec.max_pixels)
    except ValueError as exc:  # an aspect ratio over 200
        raise UsageError(f"an image of {width}x{height} pixels: {exc}") from None


def _qwen_vl_text(config: Mapping[str, Any], token: Callable[[int], str], count: int) -> str:
    return (token(int(config["vision_start_token_id"])) + token(int(config["image_token_id"])) * count
            + token(int(config["vision_end_token_id"])))


def _qwen_vl_inputs(ids, images: Mapping[str, Any], image_token: int) -> dict[str, Any]:
    # transformers 5 places M-RoPE positions from mm_token_type_ids; without it the image is read as text positions
    return {**images, "mm_token_type_ids": (ids == image_token).long()}


def _qwen_vl_features(model, images: Mapping[str, Any]):
    return model.model.get_image_features(images["pixel_values"], images["image_grid_thw"])


# -- Gemma 3: every image resized to the encoder's square, a fixed run of soft tokens, bidirectional over it ------
def _gemma3_spec(config: Mapping[str, Any], pre: Mapping[str, Any], parameters: int) -> VisionSpec:
    vision = config["vision_config"]
    size = pre.get("size") or {}
    side = int(size.get("height") or vision.get("image_size", 896))
    patch = int(vision.get("patch_size", 14))
    per_side = int(round(int(config.get("mm_tokens_per_image", 256)) ** 0.5))
    return VisionSpec(
        family="gemma3", encoder_parameters=parameters, hidden_size=int(vision["hidden_size"]),
        layers=int(vision["num_hidden_layers"]), patch_size=patch, merge_size=max(1, side // patch // per_side),
        min_pixels=side * side, max_pixels=side * side, image_token_id=int(config["image_token_index"]),
        resample=int(pre.get("resample", 2)))


def _gemma3_size(height: int, width: int, spec: VisionSpec) -> tuple[int, int]:
    side = int(round(spec.max_pixels ** 0.5))
    return side, side


def _gemma3_text(config: Mapping[str, Any], token: Callable[[int], str], count: int) -> str:
    # Gemma3Processor's full_image_sequence: blank lines around begin-of-image, the soft tokens, end-of-image
    return (f"\n\n{token(int(config['boi_token_index']))}{token(int(config['image_token_index'])) * count}"
            f"{token(int(config['eoi_token_index']))}\n\n")


def _gemma3_inputs(ids, images: Mapping[str, Any], image_token: int) -> dict[str, Any]:
    # token_type_ids marks the image tokens, which attend to each other both ways
    return {"pixel_values": images["pixel_values"], "token_type_ids": (ids == image_token).long()}


def _gemma3_features(model, images: Mapping[str, Any]):
    return model.model.get_image_features(images["pixel_values"])


FAMILIES: dict[str, VisionFamily] = {f.name: f for f in (
    VisionFamily("qwen2_5_vl", ("visual.", "model.visual."), _qwen_vl_spec,
                 "transformers.models.qwen2_vl.image_processing_pil_qwen2_vl.Qwen2VLImageProcessorPil",
                 _qwen_vl_size, _qwen_vl_text, _qwen_vl_inputs, _qwen_vl_features),
    VisionFamily("gemma3", ("vision_tower.", "multi_modal_projector.", "model.vision_tower.",
                            "model.multi_modal_projector."), _gemma3_spec,
                 "transformers.models.gemma3.image_processing_pil_gemma3.Gemma3ImageProcessorPil",
                 _gemma3_size, _gemma3_text, _gemma3_inputs, _gemma3_features),
)}


def fit_image(pixels: np.ndarray, spec: VisionSpec) -> np.ndarray:
    """The image at the size the family's processor gives it (with the processor's filter), so that a runtime
    which sizes images by other rounding or filters (llama.cpp's mtmd) is handed exactly what the model sees."""
    from PIL import Image

    height, width = pixels.shape[:2]
    size = FAMILIES[spec.family].processed_size(height, width, spec)
    if size == (height, width):
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((size[1], size[0]), Image.Resampling(spec.resample)),
                      dtype=np.uint8)


def read_vision(folder: Path, config: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> VisionSpec:
    """The vision part of a VLM folder, from config.json, the processor's settings and the safetensors headers."""
    family = FAMILIES[str(config["model_type"])]
    file = folder / PREPROCESSOR
    if not file.is_file():
        raise UsageError(f"{folder}: no {PREPROCESSOR}; a vision-language model's folder carries its image "
                         "processor's settings (`AutoProcessor.from_pretrained(...).save_pretrained(DIR)`), which "
                         "decide how images are sized and normalised")
    try:
        pre = json.loads(file.read_text())
    except ValueError as exc:
        raise UsageError(f"{file}: not valid JSON ({exc})") from None
    parameters = 0
    for name, shape in shapes.items():
        if name.startswith(family.vision_prefixes):
            parameters += int(np.prod(shape))
    if not parameters:
        raise UsageError(f"{folder}: config.json has a vision_config but the weights hold no vision tensors "
                         f"({' or '.join(family.vision_prefixes)}*): the checkpoint is incomplete")
    return family.read_spec(config, pre, parameters)


def split_prompt(prompt: str, images: int, what: str = "--prompt") -> list[str]:
    """The text around each image placeholder; a UsageError where their count is not the images'."""
    parts = prompt.split(IMAGE_PLACEHOLDER)
    if len(parts) - 1 != images:
        raise UsageError(f"{what} {prompt!r}: it marks {len(parts) - 1} image(s) with {IMAGE_PLACEHOLDER} but "
                         f"{images} image(s) were given; put one {IMAGE_PLACEHOLDER} where each image goes")
    return parts


def _processor(model):
    family = FAMILIES[model.vision.family]
    return model.loaded("image_processor", lambda: family.processor(model.directory))


def reference_inputs(model, prompt: str, pixels: Sequence[np.ndarray]) -> tuple[dict[str, Any], list[int]]:
    """transformers' inputs for ``prompt`` with ``pixels`` (HxWx3 uint8 each) as the family's processor makes
    them (each placeholder written as the family's image text, the whole prompt tokenized at once), and the ids."""
    import torch
    from PIL import Image

    family = FAMILIES[model.vision.family]
    parts = split_prompt(prompt, len(pixels))
    images: dict[str, Any] = {}
    counts: list[int] = []
    if pixels:
        images = dict(_processor(model)(images=[Image.fromarray(p) for p in pixels], return_tensors="pt"))
        grid = images.get("image_grid_thw")
        counts = ([int(g.prod()) // model.vision.merge_size ** 2 for g in grid] if grid is not None
                  else [model.vision.max_image_tokens] * len(pixels))
    tokenizer = model.tokenizer()
    text = parts[0] + "".join(family.image_text(model.config, tokenizer.id_to_token, count) + after
                              for count, after in zip(counts, parts[1:]))
    ids = list(model.encode(text))
    tensor = torch.tensor([ids], dtype=torch.long)
    inputs = {"input_ids": tensor, "attention_mask": torch.ones_like(tensor),
              **(family.model_inputs(tensor, images, model.vision.image_token_id) if pixels else {})}
    return inputs, ids


def reference_features(model, pixels: np.ndarray) -> np.ndarray:
    """The image's features as the decoder receives them ([image tokens, decoder width]), from transformers."""
    import torch
    from PIL import Image

    family = FAMILIES[model.vision.family]
    images = _processor(model)(images=[Image.fromarray(pixels)], return_tensors="pt")
    with torch.no_grad():
        out = family.features(model.torch_model(), images)
    features = getattr(out, "pooler_output", out)
    if isinstance(features, (list, tuple)):
        features = torch.cat([f.reshape(-1, f.shape[-1]) for f in features])
    return features.reshape(-1, features.shape[-1]).float().numpy()
