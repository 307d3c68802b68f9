"""Non-local blocks (Wang et al., CVPR 2018) and their insertion into a ResNet's stages, as in the SBS baseline.

`insert_non_local(backbone, [0, 2, 3, 0])` puts 2 blocks after the last 2 residual blocks of layer2 and 3 after
the last 3 of layer3 (the ResNet-50 layout of FastReID's stronger baseline). The residual blocks keep their
state-dict names (``layer2.3.conv1.weight``), so ImageNet weights load before or after the insertion.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class NonLocalBlock(nn.Module):
    """Dot-product non-local block: y_i = (1/N) sum_j (theta x_i . phi x_j) g x_j, then z = x + BN(W y).

    The output BN starts at zero (weight and bias), so a freshly inserted block is the identity and does not
    disturb pretrained features.
    """

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        inner = max(channels // reduction, 1)
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.out = nn.Sequential(nn.Conv2d(inner, channels, 1), nn.BatchNorm2d(channels))
        nn.init.zeros_(self.out[1].weight)
        nn.init.zeros_(self.out[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        theta = self.theta(x).flatten(2).transpose(1, 2)  # (B, HW, C')
        phi = self.phi(x).flatten(2)  # (B, C', HW)
        g = self.g(x).flatten(2).transpose(1, 2)  # (B, HW, C')
        attn = (theta @ phi) / (h * w)
        y = (attn @ g).transpose(1, 2).reshape(b, -1, h, w)
        return x + self.out(y)


class NonLocalStage(nn.Module):
    """A residual stage whose blocks keep their names ("0", "1", ...) with non-local blocks run after some."""

    def __init__(self, stage: nn.Sequential, after: Sequence[int], channels: int, reduction: int = 2) -> None:
        super().__init__()
        self.num_blocks = len(stage)
        for i, block in enumerate(stage):
            self.add_module(str(i), block)
        self.non_local = nn.ModuleDict({str(i): NonLocalBlock(channels, reduction) for i in sorted(after)})

    def __len__(self) -> int:
        return self.num_blocks

    def __getitem__(self, i: int) -> nn.Module:
        return self._modules[str(i % self.num_blocks)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.num_blocks):
            x = self._modules[str(i)](x)
            if str(i) in self.non_local:
                x = self.non_local[str(i)](x)
        return x


def _stage_channels(stage: nn.Sequential) -> int:
    # the last conv of a residual block (main path or shortcut) has the block's output width
    return [m for m in stage[len(stage) - 1].modules() if isinstance(m, nn.Conv2d)][-1].out_channels


def insert_non_local(backbone: nn.Module, blocks_per_stage: Sequence[int], reduction: int = 2) -> nn.Module:
    """Add non-local blocks after the last `n` residual blocks of each stage ``layer1..layerN`` (in place)."""
    for idx, n in enumerate(blocks_per_stage):
        if n <= 0:
            continue
        name = f"layer{idx + 1}"
        stage = getattr(backbone, name, None)
        if not isinstance(stage, nn.Sequential):
            raise ValueError(f"non_local: the backbone has no residual stage '{name}' (a ResNet/IBN-a trunk is "
                             "needed); set non_local to zeros for this backbone")
        if n > len(stage):
            raise ValueError(f"non_local: {n} blocks asked for {name}, which has only {len(stage)} residual blocks")
        after = [len(stage) - 1 - j for j in range(n)]
        setattr(backbone, name, NonLocalStage(stage, after, _stage_channels(stage), reduction))
    return backbone
