"""Non-local blocks (Wang et al., CVPR 2018) and their insertion into a ResNet's stages, as in the SBS baseline.

`insert_non_local(backbone, [0, 2, 3, 0])` puts 2 blocks after the last 2 residual blocks of layer2 and 3 after
the last 3 of layer3 (the ResNet-50 layout of FastReID's stronger baseline). The residual blocks keep their
state-dict names (``layer2.3.conv1.weight``), so ImageNet weights load before or after the insertion.

Inner width: FastReID's `Non_local` computes `reduc_ratio // reduc_ratio`, i.e. one inner channel whatever the
stage width (28.7K parameters for the R50 layout); that is the default here, so its checkpoints load and train
the same. `reduction=2` gives Wang et al.'s channels / 2 instead (7.36M parameters for the same layout).
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

    def __init__(self, channels: int, inner: int = 1) -> None:
        super().__init__()
        if inner < 1:
            raise ValueError(f"a non-local block needs >= 1 inner channel, got {inner}")
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

    def __init__(self, stage: nn.Sequential, after: Sequence[int], channels: int, inner: int = 1) -> None:
        super().__init__()
        self.num_blocks = len(stage)
        for i, block in enumerate(stage):
            self.add_module(str(i), block)
        self.non_local = nn.ModuleDict({str(i): NonLocalBlock(channels, inner) for i in sorted(after)})

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


def inner_width(channels: int, inner_channels: int = 1, reduction: int | None = None) -> int:
    """A block's inner width: channels // reduction where a reduction is given, else `inner_channels`."""
    return max(channels // reduction, 1) if reduction else inner_channels


def insert_non_local(backbone: nn.Module, blocks_per_stage: Sequence[int], inner_channels: int = 1,
                     reduction: int | None = None) -> nn.Module:
    """Add non-local blocks after the last `n` residual blocks of each stage ``layer1..layerN`` (in place), each
    `inner_width(channels, inner_channels, reduction)` wide inside."""
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
        channels = _stage_channels(stage)
        setattr(backbone, name, NonLocalStage(stage, after, channels, inner_width(channels, inner_channels, reduction)))
    return backbone
