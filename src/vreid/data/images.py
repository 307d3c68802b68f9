"""Open an image file as 8-bit RGB, the one way every loader and `vreid data check` read images.

High-bit-depth modes are scaled by the range of the mode, not clipped (PIL's `convert("RGB")` clips
16-bit values at 255, which turns a 16-bit photo white):

- 16-bit (`I;16`, `I;16B`, `I;16L`, `I;16N`): value / 257, so 0..65535 -> 0..255.
- 32-bit integer `I`: taken as 16-bit data (what PIL makes of 16-bit PNG/TIFF files): clipped to
  0..65535, then / 257.
- 32-bit float `F`: taken as intensities in 0..1 (the float image convention): clipped, then x 255.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from vreid.data.errors import Problem

SIXTEEN_BIT_MAX = 65535


def _gray_to_uint8(im: Image.Image) -> np.ndarray:
    """Pixels of a high-bit-depth single-channel image scaled to 0..255 by the mode's range."""
    values = np.asarray(im)
    if im.mode == "F":
        return np.rint(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)
    sixteen = np.clip(values.astype(np.int64), 0, SIXTEEN_BIT_MAX)
    return ((sixteen + 128) // 257).astype(np.uint8)  # rounded division: 257 * k maps to k exactly


def to_rgb(im: Image.Image) -> Image.Image:
    """`im` as an 8-bit RGB image; 16-bit, 32-bit integer and float images are scaled (see the module doc)."""
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        return Image.fromarray(_gray_to_uint8(im)).convert("RGB")
    return im.convert("RGB")


def open_rgb(path: str | os.PathLike, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode the image at `path` as 8-bit RGB; `draft_size` lets JPEGs decode at a reduced scale (faster).

    Raises what PIL raises for a broken file (OSError, DecompressionBombError, ...); see `unreadable_image`.
    """
    with Image.open(path) as im:
        if draft_size is not None:
            im.draft("RGB", draft_size)
        return to_rgb(im)


def unreadable_image(file: str, error: BaseException) -> Problem:
    """The Problem for an image that `open_rgb` could not decode: what went wrong and the fix."""
    if isinstance(error, Image.DecompressionBombError):
        return Problem(file=file, message=f"image is too large to decode safely ({error})",
                       fix=f"resize it to at most {Image.MAX_IMAGE_PIXELS} pixels (PIL.Image.MAX_IMAGE_PIXELS), "
                           "or remove it from its list file")
    return Problem(file=file, message=f"image cannot be read ({type(error).__name__}: {error})",
                   fix="re-extract or re-download this image, or remove it from its list file; "
                       "`vreid data check` lists every such image")
