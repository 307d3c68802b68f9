"""The images an export is checked on, and the comparison of two embedding arrays."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vreid.export.errors import ExportError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class ParityImages:
    """Images to embed with both backends, where they came from, and the camera / viewpoint ids to pass."""

    images: list[Image.Image]
    source: str
    cameras: np.ndarray
    viewpoints: np.ndarray


def find_images(folder: str | os.PathLike, limit: int) -> list[Path]:
    """The first `limit` image files under `folder`, in sorted walk order (deterministic)."""
    found: list[Path] = []
    for parent, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_SUFFIXES):
                found.append(Path(parent) / name)
                if len(found) >= limit:
                    return found
    return found


def _open(paths: list[Path]) -> list[Image.Image]:
    from vreid.data.images import open_rgb

    return [open_rgb(p) for p in paths]


def cycling_ids(n: int, size: int, offset: int = 0) -> np.ndarray:
    """-1 (unknown), 0, ..., size-1, -1, ...: every kind of label the graph's metadata inputs must handle."""
    return (np.arange(offset, offset + n, dtype=np.int64) % (size + 1)) - 1


def parity_images(data_root: str | None, images_dir: str | None, count: int, size: int,
                  num_cameras: int, num_viewpoints: int) -> ParityImages:
    """`--images DIR` if given; else the run's `data.root` if it holds images; else a small synthetic world
    rendered into a temporary folder (removed after) at the model's input size."""
    if images_dir is not None:
        paths = find_images(images_dir, count) if Path(images_dir).is_dir() else []
        if not paths:
            raise ExportError(f"--images {images_dir}: no {'/'.join(IMAGE_SUFFIXES)} images found there; pass a "
                              "folder of vehicle images, or leave --images out to use the run's data.root")
        images, source = _open(paths), f"--images {images_dir}"
    elif data_root and Path(data_root).is_dir() and find_images(data_root, 1):
        images, source = _open(find_images(data_root, count)), f"data.root {data_root}"
    else:
        from vreid.synth import SynthConfig, render_dataset

        with tempfile.TemporaryDirectory(prefix="vreid-parity-") as tmp:
            render_dataset(Path(tmp) / "world", SynthConfig(ids=4, cameras=2, seed=0, size=max(32, min(size, 256)),
                                                            layout="veri776", workers=1))
            images = _open(find_images(tmp, count))
        why = ("the run names no data.root" if not data_root else f"data.root {data_root} is not a readable folder"
               if not Path(data_root).is_dir() else f"data.root {data_root} holds no images")
        source = f"synthetic world rendered to a temporary folder ({why})"
    n = len(images)
    return ParityImages(images, f"{n} images from {source}", cycling_ids(n, num_cameras),
                        cycling_ids(n, num_viewpoints, offset=1))


def compare(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """(max absolute difference, min cosine similarity row by row); NaN anywhere gives (inf, -1)."""
    if reference.shape != candidate.shape:
        return float("inf"), -1.0
    if not (np.isfinite(reference).all() and np.isfinite(candidate).all()):
        return float("inf"), -1.0
    if reference.size == 0:
        return 0.0, 1.0
    a, b = reference.astype(np.float64), candidate.astype(np.float64)
    max_abs = float(np.abs(a - b).max())
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(norms > 0, (a * b).sum(axis=1) / np.maximum(norms, 1e-300), 1.0)
    return max_abs, float(cos.min())
