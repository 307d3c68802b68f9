"""The two node embeddings of HRCN: a feature map to a node vector, and a vector to a vector of another width."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MapNode(nn.Module):
    """(B, C, H, W) -> (B, width): 1x1 conv -> BN -> ReLU -> global average -> BN -> ReLU."""

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 1)
        self.map_norm = nn.BatchNorm2d(width)
        self.norm = nn.BatchNorm1d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.relu(self.map_norm(self.conv(x))).mean(dim=(2, 3))
        return F.relu(self.norm(pooled))


class VectorNode(nn.Module):
    """(B, in) -> (B, width): linear -> BN -> ReLU (the official 1x1 conv on a 1x1 map)."""

    def __init__(self, in_features: int, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, width)
        self.norm = nn.BatchNorm1d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.linear(x)))
