"""Branch `grouped_mhsa` (was `hybrid`): a grouped layer4 whose 3x3 convs become a grouped 3x3 conv on the first groups and one MHSA
per remaining group, so some groups are convolutional thin branches and the others BoT-like ones.

G=2, one attention group: the official half conv / half MHSA block; G=4 with two: the 4-way version;
G=2 with two: its "end_bot_g" version. Groups stay independent, as in `grouped_layer4`.
"""
from __future__ import annotations

import torch
from torch import nn

from vreid.models.branches.attention import RelPosMHSA
from vreid.models.branches.grouped import GroupedLayer4, SliceInit, grouped_copy
from vreid.models.branches.registry import BRANCHES, TrunkInfo


class SplitMixer(nn.Module):
    """Stands in for a grouped 3x3 conv of G groups: groups [0, G-A) keep a grouped 3x3 conv (its filters taken from
    `conv`), groups [G-A, G) each go through their own `RelPosMHSA`."""

    def __init__(self, conv: nn.Conv2d, attention_groups: int, resolution: tuple[int, int], heads: int = 4,
                 scaled: bool = False) -> None:
        super().__init__()
        groups = conv.groups
        if not 0 < attention_groups <= groups:
            raise ValueError(f"attention_groups must be in 1..{groups}, got {attention_groups}")
        if conv.stride != (1, 1):
            raise ValueError("a hybrid block runs at stride 1 (its MHSA has a fixed map size); use last_stride=1")
        width = conv.in_channels // groups
        self.split = [width * (groups - attention_groups)] + [width] * attention_groups
        conv_groups = groups - attention_groups
        self.conv = None
        if conv_groups:
            self.conv = nn.Conv2d(self.split[0], self.split[0], conv.kernel_size, 1, conv.padding,
                                  groups=conv_groups, bias=False)
            with torch.no_grad():
                self.conv.weight.copy_(conv.weight[: self.split[0]])
        self.attention = nn.ModuleList(RelPosMHSA(width, resolution, heads, scaled) for _ in range(attention_groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, *rest = torch.split(x, self.split, dim=1)
        parts = [self.conv(first)] if self.conv is not None else []
        return torch.cat(parts + [attn(part) for attn, part in zip(self.attention, rest)], dim=1)


def hybrid_copy(trunk: TrunkInfo, groups: int = 2, attention_groups: int = 1, heads: int = 4,
                init: SliceInit = "first", scaled: bool = False) -> GroupedLayer4:
    """Grouped layer4 (stride 1) with the 3x3 conv of every block replaced by a `SplitMixer`."""
    branch = grouped_copy(trunk, groups=groups, last_stride=1, init=init)
    for block in branch:
        block.conv2 = SplitMixer(block.conv2, attention_groups, trunk.resolution, heads, scaled)
    return branch


BRANCHES.register("grouped_mhsa")(hybrid_copy)
