"""What differs between vision-language families: how their folder describes the vision part, how transformers'
reference is fed an image, and how a prompt's image placeholder becomes the family's tokens.

Each `VisionFamily` is written from the family's own transformers code (its processor and model classes) and
checked against the runtimes that run it (tests/compiler/vlm). A family not listed here is refused by the front
end by name (`compiler.frontend.huggingface`), never read as a text decoder with its vision tower left out.
"""

from __future__ import annotations

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
    #: the prefix of the vision encoder's and projector's tensors in the checkpoint
    vision_prefixes: tuple[str, ...]
    read_spec: Callable[[Mapping[str, Any], Mapping[str, Any], int], VisionSpec]
    #: the image processor transformers pairs with the family (its PIL variant: no torchvision needed)
    image_processor: str
    #: (height, width, spec) -> the size the family's processor resizes an image to
    processed_size: Callable[[int, int, VisionSpec], tuple[int, int]]

    def processor(self, folder: Path):
        module, _, name = self.image_processor.rpartition(".")
        import importlib

        return getattr(importlib.import_module(module), name).from_pretrained(str(folder), local_files_only=True)


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
        image_token_id=int(config["image_token_id"]))


def _qwen_vl_size(height: int, width: int, spec: VisionSpec) -> tuple[int, int]:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    try:
        return smart_resize(height, width, spec.patch_size * spec.merge_size, spec.min_pixels, spec.max_pixels)
    except ValueError as exc:  # an aspect ratio over 200
        raise UsageError(f"an image of {width}x{height} pixels: {exc}") from None


FAMILIES: dict[str, VisionFamily] = {f.name: f for f in (
    VisionFamily("qwen2_5_vl", ("visual.", "model.visual."), _qwen_vl_spec,
                 "transformers.models.qwen2_vl.image_processing_pil_qwen2_vl.Qwen2VLImageProcessorPil",
                 _qwen_vl_size),
)}


def fit_image(pixels: np.ndarray, spec: VisionSpec) -> np.ndarray:
    """The image at the size the family's processor gives it (bicubic, as the processor resizes), so that a runtime
    which sizes images by other rounding (llama.cpp's mtmd) is handed exactly what the model was trained on."""
    from PIL import Image

    height, width = pixels.shape[:2]
    size = FAMILIES[spec.family].processed_size(height, width, spec)
    if size == (height, width):
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((size[1], size[0]), Image.Resampling.BICUBIC), dtype=np.uint8)


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
    them, and the prompt's token ids with every image expanded to its run of placeholder tokens."""
    import torch
    from PIL import Image

    processor = _processor(model)
    parts = split_prompt(prompt, len(pixels))
    inputs: dict[str, Any] = {}
    counts: list[int] = []
    if pixels:
        images = processor(images=[Image.fromarray(p) for p in pixels], return_tensors="pt")
        inputs.update(images)
        grid = images["image_grid_thw"]
        counts = [int(g.prod()) // model.vision.merge_size ** 2 for g in grid]
    config = model.config
    ids: list[int] = list(model.encode(parts[0])) if parts[0] else []
    for count, text in zip(counts, parts[1:]):
        ids += [int(config["vision_start_token_id"])] + [model.vision.image_token_id] * count \
               + [int(config["vision_end_token_id"])]
        ids += list(model.tokenizer().encode(text, add_special_tokens=False).ids) if text else []
    tensor = torch.tensor([ids], dtype=torch.long)
    inputs["input_ids"] = tensor
    inputs["attention_mask"] = torch.ones_like(tensor)
    inputs["mm_token_type_ids"] = (tensor == model.vision.image_token_id).long()
    return inputs, ids


def reference_features(model, pixels: np.ndarray) -> np.ndarray:
    """The image's features as the decoder receives them ([image tokens, decoder width]), from transformers."""
    import torch
    from PIL import Image

    images = _processor(model)(images=[Image.fromarray(pixels)], return_tensors="pt")
    with torch.no_grad():
        out = model.torch_model().model.get_image_features(images["pixel_values"], images["image_grid_thw"])
    features = getattr(out, "pooler_output", out)
    if isinstance(features, (list, tuple)):
        features = torch.cat(list(features))
    return features.float().numpy()
