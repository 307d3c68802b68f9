"""The spatial graph of HPGN: nodes are the positions of a feature map, edges join 4-neighbours on its grid.

A spatial graph layer (SG) aggregates each node with its neighbours through the fixed propagation matrix
P = D^-1 A + I (A: 4-neighbour adjacency without self-loops, D: node degrees), re-weights every aggregated node
with a learnable weight per channel and position, then BatchNorm and LeakyReLU(0.2). A spatial graph network (SGN)
stacks SGs on one map size.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: the grid steps that make the spatial neighbours of a node (no diagonals)
NEIGHBOUR_STEPS = ((-1, 0), (1, 0), (0, -1), (0, 1))


def grid_adjacency(height: int, width: int) -> torch.Tensor:
    """(N, N) 0/1 adjacency of an height x width grid, nodes numbered row-major, 4-neighbours, no self-loops."""
    n = height * width
    adjacency = torch.zeros(n, n)
    for row in range(height):
        for col in range(width):
            for dr, dc in NEIGHBOUR_STEPS:
                r, c = row + dr, col + dc
                if 0 <= r < height and 0 <= c < width:
                    adjacency[row * width + col, r * width + c] = 1.0
    return adjacency


def propagation_matrix(height: int, width: int) -> torch.Tensor:
    """P = D^-1 A + I for the grid: X @ P gives node j its own feature plus sum_i x_i / deg(i) over its
    neighbours i (the official normalisation). A node without neighbours (a 1 x 1 map) keeps only itself."""
    adjacency = grid_adjacency(height, width)
    degree = adjacency.sum(dim=1, keepdim=True).clamp(min=1.0)
    return adjacency / degree + torch.eye(height * width)


class SpatialGraphLayer(nn.Module):
    """(B, C, H, W) -> (B, C, H, W): aggregate over P, multiply by the (C, H*W) weight, BatchNorm, LeakyReLU.

    With `learnable_adjacency` P is a trained parameter initialised as above (the official code's choice), so after
    training a node may draw on any position; otherwise P is a fixed buffer, rebuilt from the map size.
    """

    def __init__(self, channels: int, height: int, width: int, learnable_adjacency: bool = False) -> None:
        super().__init__()
        self.channels, self.height, self.width = channels, height, width
        nodes = height * width
        propagation = propagation_matrix(height, width)
        if learnable_adjacency:
            self.adjacency = nn.Parameter(propagation)
        else:
            self.register_buffer("adjacency", propagation, persistent=False)
        self.weight = nn.Parameter(torch.empty(channels, nodes))
        bound = 1.0 / math.sqrt(nodes)  # the official init: U(-1/sqrt(N), 1/sqrt(N))
        nn.init.uniform_(self.weight, -bound, bound)
        self.norm = nn.BatchNorm2d(channels, eps=1e-4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if (c, h, w) != (self.channels, self.height, self.width):
            raise ValueError(f"spatial graph layer built for {self.channels} x {self.height} x {self.width} maps, "
                             f"got {c} x {h} x {w}: the model's image size (data.height / data.width) fixes its "
                             "graphs; embed images of that size")
        aggregated = x.flatten(2) @ self.adjacency
        reweighted = aggregated * self.weight
        return F.leaky_relu(self.norm(reweighted.view(b, c, h, w)), 0.2)

    def extra_repr(self) -> str:
        learnable = isinstance(self.adjacency, nn.Parameter)
        return f"channels={self.channels}, grid={self.height}x{self.width}, learnable_adjacency={learnable}"


class SpatialGraphNetwork(nn.Module):
    """`depth` stacked spatial graph layers on one map size (each with its own weight, BN and adjacency)."""

    def __init__(self, channels: int, height: int, width: int, depth: int = 3,
                 learnable_adjacency: bool = False) -> None:
        super().__init__()
        self.height, self.width = height, width
        self.layers = nn.ModuleList(SpatialGraphLayer(channels, height, width, learnable_adjacency)
                                    for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
