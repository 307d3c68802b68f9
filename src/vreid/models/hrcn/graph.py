"""HRCN's graph-relation module: a dynamic graph over a sample's node vectors and two residual graph convolutions.

The graph of each sample comes from its own nodes X (B, n, c): affinity E = X X^T / c with entries at or below a
gate set to 0 and every row L1-normalised (the diagonal is kept), then the symmetric normalisation
A = D^-1/2 (E + I) D^-1/2 with D the row sums of E + I. Because of the row L1 step E is row-stochastic, not
symmetric: every row of E + I with a surviving entry sums to 2, so A = (E + I) / 2 there, a row-stochastic matrix
(rows sum to 1); A is symmetric only where E is. A row gated away entirely keeps just its self-loop (A_ii = 1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def gated_affinity(nodes: torch.Tensor, gate: float) -> torch.Tensor:
    """(B, n, n): X X^T / c, entries <= `gate` zeroed, each row L1-normalised (an all-zero row stays zero)."""
    affinity = nodes @ nodes.transpose(1, 2) / nodes.shape[-1]
    affinity = affinity.masked_fill(affinity <= gate, 0.0)
    return F.normalize(affinity, p=1, dim=-1)


def normalized_adjacency(affinity: torch.Tensor) -> torch.Tensor:
    """(B, n, n): D^-1/2 (E + I) D^-1/2 with D = diag(row sums of E + I); symmetric when E is."""
    with_loops = affinity + torch.eye(affinity.shape[-1], dtype=affinity.dtype, device=affinity.device)
    scale = with_loops.sum(dim=-1).rsqrt()
    return scale[..., :, None] * with_loops * scale[..., None, :]


class GraphConv(nn.Module):
    """One residual graph convolution: H' = ReLU(BN_nodes(Dropout(A H W + b))) + H.

    BN_nodes is a BatchNorm1d over the node axis (one channel per node, statistics over batch and feature), as in
    the official code; W is square (c x c), initialised N(0, init_std^2), the bias at 0.
    """

    def __init__(self, width: int, num_nodes: int, dropout: float = 0.5, init_std: float = 0.01) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        nn.init.normal_(self.linear.weight, std=init_std)
        nn.init.zeros_(self.linear.bias)
        self.dropout = nn.Dropout(dropout)
        self.node_norm = nn.BatchNorm1d(num_nodes)

    def forward(self, nodes: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        mixed = self.linear(adjacency @ nodes)
        return F.relu(self.node_norm(self.dropout(mixed))) + nodes


class GraphRelation(nn.Module):
    """Nodes (B, n, c) -> related nodes (B, n, c): the gated dynamic graph, then two residual graph convolutions."""

    def __init__(self, width: int, num_nodes: int, gate: float = 1e-3, dropout: float = 0.5,
                 init_std: float = 0.01) -> None:
        super().__init__()
        self.width, self.num_nodes, self.gate = width, num_nodes, gate
        self.layers = nn.ModuleList([GraphConv(width, num_nodes, dropout, init_std) for _ in range(2)])

    def adjacency(self, nodes: torch.Tensor) -> torch.Tensor:
        return normalized_adjacency(gated_affinity(nodes, self.gate))

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        if nodes.shape[1:] != (self.num_nodes, self.width):
            raise ValueError(f"GraphRelation expects (B, {self.num_nodes}, {self.width}) nodes, "
                             f"got {tuple(nodes.shape)}")
        adjacency = self.adjacency(nodes)
        for layer in self.layers:
            nodes = layer(nodes, adjacency)
        return nodes

    def extra_repr(self) -> str:
        return f"nodes={self.num_nodes}, width={self.width}, gate={self.gate}"
