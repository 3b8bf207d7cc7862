"""Images in and out of chipfit: a user's image file read with limits, and the fixed images artifacts are verified on.

A user's file is opened by Pillow only after its size is checked, with Pillow's decompression-bomb guard set to
`MAX_PIXELS`; anything that is not a still image it can decode is refused naming the file. The verification
images are drawn here (shapes, colours, a digit), at sizes every family's processor keeps as they are (multiples
of 56 pixels, within the usual pixel bounds), so the reference and the runtime see the same pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compiler.errors import UsageError

MAX_FILE_BYTES = 64 * 2 ** 20
#: the largest image chipfit decodes (width x height); processors shrink images to a few megapixels anyway
MAX_PIXELS = 40_000_000


def read_image(path: str | Path, what: str = "--image") -> np.ndarray:
    """The file as HxWx3 uint8 RGB; a UsageError naming it where it is missing, too big or not an image."""
    from PIL import Image, UnidentifiedImageError

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"{what} {file}: no such file")
    size = file.stat().st_size
    if size > MAX_FILE_BYTES:
        raise UsageError(f"{what} {file}: {size / 2 ** 20:.1f} MiB, over chipfit's limit of "
                         f"{MAX_FILE_BYTES // 2 ** 20} MiB for one image; resize it first")
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow raises DecompressionBombError past twice this, warns past it
    try:
        with Image.open(file) as image:
            if image.width * image.height > MAX_PIXELS:
                raise UsageError(f"{what} {file}: {image.width}x{image.height} pixels, over chipfit's limit of "
                                 f"{MAX_PIXELS / 1e6:.0f} megapixels; resize it first")
            if getattr(image, "n_frames", 1) > 1:
                raise UsageError(f"{what} {file}: an animation of {image.n_frames} frames; give a still image")
            image.load()
            rgb = image.convert("RGB")
    except UsageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UsageError(f"{what} {file}: not an image Pillow can read ({exc})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    return np.asarray(rgb, dtype=np.uint8).copy()


def fixed_images() -> list[tuple[str, np.ndarray]]:
    """The verification images: a yellow disc with a 7 on blue, and red and green bars with a 3 on grey."""
    from PIL import Image, ImageDraw

    first = Image.new("RGB", (112, 56), (20, 90, 200))
    draw = ImageDraw.Draw(first)
    draw.ellipse((8, 6, 52, 50), fill=(240, 200, 10))
    draw.text((78, 20), "7", fill=(255, 255, 255))
    second = Image.new("RGB", (56, 112), (128, 128, 128))
    draw = ImageDraw.Draw(second)
    draw.rectangle((4, 4, 24, 108), fill=(220, 30, 30))
    draw.rectangle((30, 4, 52, 60), fill=(30, 200, 60))
    draw.text((34, 80), "3", fill=(0, 0, 0))
    return [("disc-7.png", np.asarray(first, dtype=np.uint8)), ("bars-3.png", np.asarray(second, dtype=np.uint8))]
