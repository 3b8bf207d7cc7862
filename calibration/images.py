"""Image folders as samples: PNG/JPEG files, preprocessed as a small TOML spec in the folder says.

``preprocess.toml`` beside the images (all keys optional, unknown keys are errors):

    size = [224, 224]          # height, width to resize to (default: the model input's)
    mode = "RGB"               # "RGB" or "L" (grey)
    scale = 0.00392156862745   # multiply pixel values (1/255)
    mean = [0.485, 0.456, 0.406]
    std = [0.229, 0.224, 0.225]
    layout = "NCHW"            # or "NHWC"
    resample = "bilinear"      # nearest, bilinear, bicubic, lanczos
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calibration.errors import CalibrationError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPEC_NAME = "preprocess.toml"
_KEYS = {"size", "mode", "scale", "mean", "std", "layout", "resample"}


@dataclass(frozen=True)
class Preprocess:
    size: tuple[int, int] | None = None
    mode: str = "RGB"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str = "NCHW"
    resample: str = "bilinear"


def load_preprocess(folder: Path) -> Preprocess:
    path = folder / SPEC_NAME
    if not path.is_file():
        return Preprocess()
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise CalibrationError(f"{path}: not valid TOML: {exc}") from exc
    unknown = set(data) - _KEYS
    if unknown:
        raise CalibrationError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    spec = Preprocess(
        size=tuple(data["size"]) if "size" in data else None,
        mode=data.get("mode", "RGB"),
        scale=float(data.get("scale", 1.0 / 255.0)),
        mean=tuple(float(v) for v in data.get("mean", [0.0])),
        std=tuple(float(v) for v in data.get("std", [1.0])),
        layout=data.get("layout", "NCHW"),
        resample=data.get("resample", "bilinear"),
    )
    if spec.mode not in ("RGB", "L"):
        raise CalibrationError(f"{path}: mode must be \"RGB\" or \"L\", got {spec.mode!r}")
    if spec.layout not in ("NCHW", "NHWC"):
        raise CalibrationError(f"{path}: layout must be \"NCHW\" or \"NHWC\", got {spec.layout!r}")
    if spec.resample not in ("nearest", "bilinear", "bicubic", "lanczos"):
        raise CalibrationError(f"{path}: resample must be nearest, bilinear, bicubic or lanczos")
    if any(s == 0 for s in spec.std):
        raise CalibrationError(f"{path}: std must not contain 0")
    if spec.size is not None and (len(spec.size) != 2 or any(int(v) <= 0 for v in spec.size)):
        raise CalibrationError(f"{path}: size must be [height, width] of positive integers")
    return spec


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_images(folder: Path, input_spec) -> list[np.ndarray]:
    """One array per image, shaped like one sample of ``input_spec`` (a `TensorSpec` of rank 4)."""
    from PIL import Image, UnidentifiedImageError

    spec = load_preprocess(folder)
    shape = input_spec.shape
    if len(shape) != 4:
        raise CalibrationError(
            f"{folder}: images fit a rank-4 image input; input {input_spec.name!r} is {input_spec.shape_str()}"
        )
    channels_at = 1 if spec.layout == "NCHW" else 3
    spatial = (shape[2], shape[3]) if spec.layout == "NCHW" else (shape[1], shape[2])
    size = spec.size or tuple(d for d in spatial)
    if not all(isinstance(d, int) for d in size):
        raise CalibrationError(f"{folder}: the model's image size is symbolic; set size = [h, w] in {SPEC_NAME}")
    channels = 3 if spec.mode == "RGB" else 1
    if isinstance(shape[channels_at], int) and shape[channels_at] != channels:
        raise CalibrationError(
            f"{folder}: mode {spec.mode} gives {channels} channels, input {input_spec.name!r} takes {shape[channels_at]} "
            f"(set mode in {SPEC_NAME})"
        )
    resample = getattr(Image.Resampling, spec.resample.upper())
    mean = np.asarray(spec.mean, np.float32)
    std = np.asarray(spec.std, np.float32)
    samples = []
    for file in image_files(folder):
        try:
            with Image.open(file) as image:
                pixels = image.convert(spec.mode).resize((int(size[1]), int(size[0])), resample)
        except (UnidentifiedImageError, OSError) as exc:
            raise CalibrationError(f"{file}: not a readable image ({exc})") from exc
        array = np.asarray(pixels, dtype=np.float32) * spec.scale
        if array.ndim == 2:
            array = array[..., None]
        array = (array - mean) / std
        if spec.layout == "NCHW":
            array = array.transpose(2, 0, 1)
        samples.append(array[None].astype(input_spec.dtype))
    return samples
