"""Train and test image transforms built from DataConfig, with per-sample seeding for reproducible augmentation.

The torchvision ops draw from torch's global RNG (and AutoAugment also from it); `SeededTransform` runs the
pipeline inside `torch.random.fork_rng` seeded with the sample's seed, so the same (image, seed) gives the same
tensor whatever the worker or process, and the caller's RNG state is left untouched.
"""
from __future__ import annotations

import random
from typing import Callable

import torch
from PIL import Image
from torchvision import transforms as T

from vreid.config.schema import DataConfig


def build_train_transform(cfg: DataConfig) -> Callable[[Image.Image], torch.Tensor]:
    """resize -> flip -> pad + random crop -> colour jitter -> AutoAugment (prob) -> tensor -> normalise -> erase."""
    t = cfg.transforms
    size = (cfg.height, cfg.width)
    ops: list = [T.Resize(size, interpolation=T.InterpolationMode.BILINEAR)]
    if t.flip_prob > 0:
        ops.append(T.RandomHorizontalFlip(p=t.flip_prob))
    if t.pad > 0:
        ops += [T.Pad(t.pad), T.RandomCrop(size)]
    if t.color_jitter > 0:
        s = t.color_jitter
        ops.append(T.ColorJitter(brightness=s, contrast=s, saturation=s, hue=min(0.5, s / 4)))
    if t.autoaugment_prob > 0:
        ops.append(T.RandomApply([T.AutoAugment(T.AutoAugmentPolicy.IMAGENET)], p=t.autoaugment_prob))
    ops += [T.ToTensor(), T.Normalize(cfg.mean, cfg.std)]
    if t.random_erasing > 0:
        # value 0 after normalisation = the dataset mean colour
        ops.append(T.RandomErasing(p=t.random_erasing, value=0))
    return T.Compose(ops)


def build_test_transform(cfg: DataConfig) -> Callable[[Image.Image], torch.Tensor]:
    """resize -> tensor -> normalise (deterministic)."""
    return T.Compose([T.Resize((cfg.height, cfg.width), interpolation=T.InterpolationMode.BILINEAR),
                      T.ToTensor(), T.Normalize(cfg.mean, cfg.std)])


class SeededTransform:
    """Apply `transform` with torch's and Python's RNGs seeded from a per-sample seed, restoring them after."""

    def __init__(self, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.transform = transform

    def __call__(self, image: Image.Image, seed: int | None = None) -> torch.Tensor:
        if seed is None:
            return self.transform(image)
        py_state = random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                random.seed(int(seed))
                return self.transform(image)
        finally:
            random.setstate(py_state)

    def __repr__(self) -> str:
        return f"SeededTransform({self.transform!r})"


def build_transforms(cfg: DataConfig) -> tuple[SeededTransform, SeededTransform]:
    """(train, test) transforms, both callable as `t(image, seed=None)`."""
    return SeededTransform(build_train_transform(cfg)), SeededTransform(build_test_transform(cfg))
