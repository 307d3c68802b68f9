"""Non-learned baselines on the synthetic world: a colour histogram (what colour alone can do)."""
from __future__ import annotations

import os
from typing import Iterable

import numpy as np
from PIL import Image

from vreid.data.images import open_rgb


def color_histogram(img: Image.Image | np.ndarray, bins: tuple[int, int, int] = (8, 4, 4)) -> np.ndarray:
    """HSV histogram of an image's central region, L1-normalised then square-rooted (Hellinger embedding).

    Euclidean distance between two such vectors is the Hellinger distance of the histograms.
    """
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    w, h = img.size
    img = img.crop((w // 10, h // 10, w - w // 10, h - h // 10)).convert("HSV")
    hsv = np.asarray(img, np.int64).reshape(-1, 3)
    idx = [(hsv[:, c] * b) // 256 for c, b in enumerate(bins)]
    flat = (idx[0] * bins[1] + idx[1]) * bins[2] + idx[2]
    hist = np.bincount(flat, minlength=bins[0] * bins[1] * bins[2]).astype(np.float32)
    return np.sqrt(hist / max(1.0, hist.sum()))


def color_histogram_features(paths: Iterable[str | os.PathLike], bins: tuple[int, int, int] = (8, 4, 4)
                             ) -> np.ndarray:
    """(N, D) colour-histogram embeddings of image files, in order."""
    feats = []
    for p in paths:
        feats.append(color_histogram(open_rgb(p), bins))
    return np.stack(feats) if feats else np.zeros((0, bins[0] * bins[1] * bins[2]), np.float32)
