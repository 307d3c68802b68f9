"""Branch `grouped_mhsa` (was `hybrid`): a grouped layer4 whose 3x3 convs become a grouped 3x3 conv on the first groups and one MHSA
per remaining group, so some groups are convolutional thin branches and the others BoT-like ones.

G=2, one attention group: the official half conv / half MHSA block (`Conv_MHSA_2G`); G=4 with two: the 4-way
version (`Conv_MHSA_4G`); G=2 with two: its "end_bot_g" version. Groups stay independent, as in `grouped_layer4`.
The 3x3 conv that stays starts from random weights as in the official code (`conv_init="pretrained"` slices the
trunk's layer4 filters instead, as `grouped_layer4` does for its convs).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from vreid.models.branches.attention import PositionTerm, RelPosMHSA
from vreid.models.branches.grouped import GroupedLayer4, SliceInit, grouped_copy
from vreid.models.branches.registry import BRANCHES, TrunkInfo


class SplitMixer(nn.Module):
    """Stands in for a grouped 3x3 conv: its channels split into `parts` equal parts (default: the conv's groups G);
    parts [0, parts-A) go through one 3x3 conv with parts-A groups, parts [parts-A, parts) each through their own
    `RelPosMHSA`. parts=2, A=1 on a G=4 layer is the official `Conv_MHSA_2G` of `MBR_R50_4G`."""

    def __init__(self, conv: nn.Conv2d, attention_groups: int, resolution: tuple[int, int], heads: int = 4,
                 scaled: bool = False, position: PositionTerm = "official",
                 conv_init: Literal["random", "pretrained"] = "random", parts: int | None = None) -> None:
        super().__init__()
        parts = parts or conv.groups
        if conv.in_channels % parts:
            raise ValueError(f"{conv.in_channels} channels do not split into parts={parts}")
        if not 0 < attention_groups <= parts:
            raise ValueError(f"attention_groups must be in 1..{parts}, got {attention_groups}")
        if conv_init not in ("random", "pretrained"):
            raise ValueError(f"conv_init must be 'random' or 'pretrained', got {conv_init!r}")
        if conv_init == "pretrained" and parts != conv.groups:
            raise ValueError("conv_init=pretrained slices the grouped layer4 filters, which needs parts = groups")
        if conv.stride != (1, 1):
            raise ValueError("a hybrid block runs at stride 1 (its MHSA has a fixed map size); use last_stride=1")
        width = conv.in_channels // parts
        self.split = [width * (parts - attention_groups)] + [width] * attention_groups
        conv_groups = parts - attention_groups
        self.conv = None
        if conv_groups:
            self.conv = nn.Conv2d(self.split[0], self.split[0], conv.kernel_size, 1, conv.padding,
                                  groups=conv_groups, bias=False)
            if conv_init == "pretrained":
                with torch.no_grad():
                    self.conv.weight.copy_(conv.weight[: self.split[0]])
        self.attention = nn.ModuleList(RelPosMHSA(width, resolution, heads, scaled, position)
                                       for _ in range(attention_groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, *rest = torch.split(x, self.split, dim=1)
        parts = [self.conv(first)] if self.conv is not None else []
        return torch.cat(parts + [attn(part) for attn, part in zip(self.attention, rest)], dim=1)


def hybrid_copy(trunk: TrunkInfo, groups: int = 2, attention_groups: int = 1, heads: int = 4,
                init: SliceInit = "first", scaled: bool = False, position: PositionTerm = "official",
                conv_init: Literal["random", "pretrained"] = "random", parts: int | None = None) -> GroupedLayer4:
    """Grouped layer4 (stride 1) with the 3x3 conv of every block replaced by a `SplitMixer`."""
    branch = grouped_copy(trunk, groups=groups, last_stride=1, init=init)
    for block in branch:
        block.conv2 = SplitMixer(block.conv2, attention_groups, trunk.resolution, heads, scaled, position, conv_init,
                                 parts)
    return branch


BRANCHES.register("grouped_mhsa")(hybrid_copy)
