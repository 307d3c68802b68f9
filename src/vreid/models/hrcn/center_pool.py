"""HRCN's regional part priors: concentric masks on a feature map (filled discs by default, rings or squares).

`PART_SHAPES[name](height, width, parts)` gives `parts` binary (h, w) masks centred on the map centre
((w - 1) / 2, (h - 1) / 2). Disc k (k = 1..parts) has radius k * (min(h, w) / 2) / parts; rings are the differences
of consecutive discs (the first ring is the first disc); square k has half-sides (h * k) // (2 * parts) and
(w * k) // (2 * parts). `CenterPool` multiplies the map by each mask and adds the unmasked map last; averaging a
masked map afterwards runs over the whole map, so the zeros dilute its mean, as in the official code.

Small maps: on a 16 x 16 map (256 px input, stride 16) the four discs cover 12, 52, 112 and 208 of the 256 cells.
On a 4 x 4 map (64 px) four discs would give an empty first disc and two equal middle ones, so the synthetic recipe
uses two discs (4 and 12 cells); `degenerate_parts` names such masks so a method can warn.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from vreid.registry import Registry

#: name -> masks(height, width, parts) -> list of `parts` (h, w) float masks
PART_SHAPES: Registry[Callable[[int, int, int], list[torch.Tensor]]] = Registry("part shape")


def _offsets(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(dy, dx), each (h, w): every cell's offset from the map centre."""
    # always real CPU tensors, also while a model is built under torch.device("meta")
    dy = torch.arange(height, dtype=torch.float32, device="cpu")[:, None] - (height - 1) / 2
    dx = torch.arange(width, dtype=torch.float32, device="cpu")[None, :] - (width - 1) / 2
    return dy.expand(height, width), dx.expand(height, width)


@PART_SHAPES.register("circle")
def disc_masks(height: int, width: int, parts: int) -> list[torch.Tensor]:
    dy, dx = _offsets(height, width)
    step = min(height, width) / 2 / parts
    return [(dy.pow(2) + dx.pow(2) <= (k * step) ** 2).float() for k in range(1, parts + 1)]


@PART_SHAPES.register("ring")
def ring_masks(height: int, width: int, parts: int) -> list[torch.Tensor]:
    discs = disc_masks(height, width, parts)
    return discs[:1] + [outer - inner for inner, outer in zip(discs, discs[1:])]


@PART_SHAPES.register("square")
def square_masks(height: int, width: int, parts: int) -> list[torch.Tensor]:
    dy, dx = _offsets(height, width)
    return [((dy.pow(2) <= ((height * k) // (2 * parts)) ** 2) & (dx.pow(2) <= ((width * k) // (2 * parts)) ** 2))
            .float() for k in range(1, parts + 1)]


def degenerate_parts(masks: list[torch.Tensor]) -> list[int]:
    """1-based indices of masks that are empty or equal to the one before (they add no distinct region)."""
    return [k + 1 for k, m in enumerate(masks) if not m.any() or (k > 0 and torch.equal(m, masks[k - 1]))]


class CenterPool(nn.Module):
    """(B, C, H, W) -> [map * mask_1, ..., map * mask_parts, map]: `parts` + 1 maps of the same shape."""

    def __init__(self, parts: int = 4, shape: str = "circle") -> None:
        super().__init__()
        self.parts, self.shape = parts, shape
        self.make_masks = PART_SHAPES.get(shape)
        self._stacked: dict[tuple, torch.Tensor] = {}   # (h, w, device, dtype) -> masks, built once per map size

    def masks(self, height: int, width: int) -> list[torch.Tensor]:
        return self.make_masks(height, width, self.parts)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        key = (x.shape[-2], x.shape[-1], x.device, x.dtype)
        if key not in self._stacked:
            self._stacked[key] = torch.stack(self.masks(key[0], key[1])).to(device=x.device, dtype=x.dtype)
        return [x * m for m in self._stacked[key]] + [x]

    def extra_repr(self) -> str:
        return f"parts={self.parts}, shape={self.shape}"
