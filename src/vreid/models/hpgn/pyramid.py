"""The pyramidal graph network (PGN) of HPGN: one spatial graph network per scale of the trunk's map, pooled and
summed into one vector."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vreid.models.hpgn.graph import SpatialGraphNetwork


def pyramid_sizes(height: int, width: int, pools: Sequence[int]) -> list[tuple[int, int]]:
    """The map size of each scale: the trunk's height x width average-pooled by each factor (at least 1 x 1)."""
    return [(max(1, height // k), max(1, width // k)) for k in pools]


def repeated_scales(sizes: Sequence[tuple[int, int]]) -> list[int]:
    """Indices (from 1) of scales whose map size equals an earlier one's: they add no new scale."""
    return [i + 1 for i, size in enumerate(sizes) if size in sizes[:i]]


class PyramidalGraphNetwork(nn.Module):
    """(B, C, H, W) -> (B, C): for each pooling factor, average-pool the map (factor 1: the map itself), run that
    scale's SGN, average over positions; the scales' vectors are summed.

    Pooling to (H // k, W // k) equals the official AvgPool2d(k, k) when k divides the map; otherwise the windows
    are adaptive (they overlap by at most a cell) instead of dropping the last rows and columns.
    """

    def __init__(self, channels: int, map_size: tuple[int, int], pools: Sequence[int], depth: int = 3,
                 learnable_adjacency: bool = False) -> None:
        super().__init__()
        self.map_size = tuple(map_size)
        self.pools = tuple(pools)
        self.sizes = pyramid_sizes(*self.map_size, self.pools)
        self.scales = nn.ModuleList(SpatialGraphNetwork(channels, h, w, depth, learnable_adjacency)
                                    for h, w in self.sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.map_size:
            raise ValueError(f"the pyramid was built for a {self.map_size[0]}x{self.map_size[1]} trunk map, got "
                             f"{x.shape[-2]}x{x.shape[-1]}: embed images of the model's size (data.height x "
                             "data.width it was built with)")
        total = None
        for size, sgn in zip(self.sizes, self.scales):
            scaled = x if size == self.map_size else F.adaptive_avg_pool2d(x, size)
            vector = sgn(scaled).mean(dim=(2, 3))
            total = vector if total is None else total + vector
        return total
