"""The test-time preprocessing of a model in PIL + numpy: what `vreid.data.transforms.build_test_transform` does.

torchvision's `Resize((h, w), BILINEAR)` on a PIL image calls `image.resize((w, h), Image.BILINEAR)`, `ToTensor`
divides the uint8 pixels by 255 and `Normalize` subtracts the mean and divides by the std, per RGB channel; the
same three steps here give the same float32 tensor without torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image

#: How images are resized; written into exports (the only mode vreid's test transform uses).
RESIZE = "bilinear"


@dataclass(frozen=True)
class Preprocessing:
    """Resize to (height, width) bilinear, RGB, pixel / 255, then (x - mean) / std per channel."""

    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def as_dict(self) -> dict[str, Any]:
        return {"height": self.height, "width": self.width, "mean": list(self.mean), "std": list(self.std),
                "resize": RESIZE, "channel_order": "RGB", "value_range": "0-1"}


def rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB as vreid's loaders read it; other modes go through `vreid.data.images.to_rgb` (which scales
    16-bit and float images rather than clipping them)."""
    if image.mode == "RGB":
        return image
    from vreid.data.images import to_rgb  # imports vreid.data (and torch): only for non-RGB images

    return to_rgb(image)


def prepare_images(images: Sequence[Image.Image], prep: Preprocessing) -> np.ndarray:
    """(N, 3, H, W) float32, normalised: the tensor the exported graph takes as `images`."""
    mean = np.asarray(prep.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(prep.std, dtype=np.float32).reshape(3, 1, 1)
    out = np.empty((len(images), 3, prep.height, prep.width), dtype=np.float32)
    for i, image in enumerate(images):
        resized = rgb(image).resize((prep.width, prep.height), Image.BILINEAR)
        pixels = np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
        out[i] = (pixels - mean) / std
    return out
