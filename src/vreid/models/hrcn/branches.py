"""HRCN's two complementary branches over a ResNet's block outputs, each a stack of graph-relation modules.

Cross-level: one graph stage per tapped ResNet stage (layer2, layer3, layer4). A stage's nodes are its last block
outputs, each embedded by a `MapNode`; every stage after the first gets one extra node first, the concatenated
related nodes of the stage below through a `VectorNode`. The last stage's related nodes are the branch's output.

Regional: the layer4 map cut by `CenterPool` into concentric parts plus the full map, each embedded by a
`MapNode`, with the cross-level branch's last node (its highest-level block) appended when given, related by one
graph module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from vreid.models.hrcn.center_pool import CenterPool
from vreid.models.hrcn.graph import GraphRelation
from vreid.models.hrcn.nodes import MapNode, VectorNode


@dataclass(frozen=True)
class GraphOptions:
    """The settings every graph-relation module of a model shares (official: gate 0.001, dropout 0.5, std 0.01)."""

    gate: float = 1e-3
    dropout: float = 0.5
    init_std: float = 0.01

    def build(self, width: int, num_nodes: int) -> GraphRelation:
        return GraphRelation(width, num_nodes, self.gate, self.dropout, self.init_std)


class CrossLevelStage(nn.Module):
    """The block maps of one ResNet stage (and the stage below's nodes) -> related nodes (B, n, width)."""

    def __init__(self, in_channels: int, width: int, num_blocks: int, lower_features: int | None,
                 graph: GraphOptions) -> None:
        super().__init__()
        self.width = width
        self.lower = None if lower_features is None else VectorNode(lower_features, width)
        self.nodes = nn.ModuleList([MapNode(in_channels, width) for _ in range(num_blocks)])
        self.num_nodes = num_blocks + (self.lower is not None)
        self.graph = graph.build(width, self.num_nodes)

    def forward(self, maps: Sequence[torch.Tensor], lower: torch.Tensor | None) -> torch.Tensor:
        nodes = [] if self.lower is None else [self.lower(lower.flatten(1))]
        nodes += [embed(m) for embed, m in zip(self.nodes, maps)]
        return self.graph(torch.stack(nodes, dim=1))


class CrossLevelBranch(nn.Module):
    """{stage: [block maps]} -> the last stage's related nodes (B, n_last, widths[-1]).

    `in_channels`, `widths` and `num_blocks` are per tapped stage (lowest first); stage s reads the last
    `num_blocks[s]` block outputs of `stages[s]`.
    """

    def __init__(self, stages: Sequence[int], in_channels: Sequence[int], widths: Sequence[int],
                 num_blocks: Sequence[int], graph: GraphOptions) -> None:
        super().__init__()
        self.tapped = tuple(stages)
        self.num_blocks = tuple(num_blocks)
        self.stages = nn.ModuleList()
        lower = None
        for c_in, width, n in zip(in_channels, widths, num_blocks):
            stage = CrossLevelStage(c_in, width, n, lower, graph)
            self.stages.append(stage)
            lower = stage.num_nodes * width
        self.num_nodes = self.stages[-1].num_nodes
        self.width = widths[-1]

    def forward(self, taps: dict[int, list[torch.Tensor]]) -> torch.Tensor:
        nodes = None
        for s, n, stage in zip(self.tapped, self.num_blocks, self.stages):
            nodes = stage(taps[s][-n:], nodes)
        return nodes


class RegionalBranch(nn.Module):
    """(layer4 map, optional high-level node) -> related nodes (B, parts + 1 [+ 1], width).

    Node order: part 1..parts, full map, then the high-level node; a high-level node of another width is
    aligned by a bias-free linear layer and BN (the identity when the widths agree, as in the official recipe).
    """

    def __init__(self, in_channels: int, width: int, parts: int, shape: str, graph: GraphOptions,
                 high_level_width: int | None = None) -> None:
        super().__init__()
        self.pool = CenterPool(parts, shape)
        self.parts = nn.ModuleList([MapNode(in_channels, width) for _ in range(parts + 1)])
        self.align_high: nn.Module | None = None
        if high_level_width is not None:
            self.align_high = nn.Identity() if high_level_width == width else nn.Sequential(
                nn.Linear(high_level_width, width, bias=False), nn.BatchNorm1d(width))
        self.num_nodes = parts + 1 + (high_level_width is not None)
        self.width = width
        self.graph = graph.build(width, self.num_nodes)

    def forward(self, x: torch.Tensor, high_level: torch.Tensor | None = None) -> torch.Tensor:
        nodes = [embed(m) for embed, m in zip(self.parts, self.pool(x))]
        if self.align_high is not None:
            if high_level is None:
                raise ValueError("this regional branch was built with a high-level node; pass it")
            nodes.append(self.align_high(high_level))
        return self.graph(torch.stack(nodes, dim=1))
