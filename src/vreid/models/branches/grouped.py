"""Branch `grouped_layer4`: layer4 with every conv split into G groups, i.e. G independent thin branches.

Output channel group g (of out_channels / G) depends only on input channel group g of the layer3 map, at about 1/G
of layer4's parameters. The grouped filters are initialised by slicing the trunk's (pretrained) layer4 filters.
"""
from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import nn

from vreid.models.branches.layer4 import set_first_stride
from vreid.models.branches.registry import BRANCHES, TrunkInfo

SliceInit = Literal["first", "own"]


def grouped_conv(conv: nn.Conv2d, groups: int, init: SliceInit = "first") -> nn.Conv2d:
    """A copy of `conv` with `groups` groups, its filters sliced from `conv`'s.

    "first": every filter keeps its first C_in/G input channels (the official MBR code, `pretrain_ongroups`);
    "own": a filter of output group g keeps the input channels of group g, the ones it now sees.
    """
    if conv.groups != 1:
        raise ValueError(f"can only group a dense conv, got groups={conv.groups}")
    if conv.in_channels % groups or conv.out_channels % groups:
        raise ValueError(f"{conv.in_channels}->{conv.out_channels} channels do not split into {groups} groups")
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, groups=groups, bias=conv.bias is not None,
                    device=conv.weight.device, dtype=conv.weight.dtype)
    cin = conv.in_channels // groups
    with torch.no_grad():
        w = conv.weight
        if init == "first":
            out.weight.copy_(w[:, :cin])
        elif init == "own":
            cout = conv.out_channels // groups
            out.weight.copy_(torch.cat([w[g * cout:(g + 1) * cout, g * cin:(g + 1) * cin] for g in range(groups)]))
        else:
            raise ValueError(f"init must be 'first' or 'own', got {init!r}")
        if conv.bias is not None:
            out.bias.copy_(conv.bias)
    return out


def group_convs(module: nn.Module, groups: int, init: SliceInit = "first") -> nn.Module:
    """Replace every Conv2d inside `module` (in place) by its grouped copy; refuse channel-mixing SE gates."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Conv2d):
            setattr(module, name, grouped_conv(child, groups, init))
        elif name == "se" and child is not None:
            raise ValueError("squeeze-excite mixes all channels; a grouped layer4 needs a backbone without SE")
        else:
            group_convs(child, groups, init)
    return module


class GroupedLayer4(nn.Sequential):
    """A grouped layer4: `groups` embeddings of out_channels / groups each."""

    def __init__(self, stage: nn.Sequential, out_channels: int, groups: int) -> None:
        super().__init__(*stage)
        self.out_channels, self.num_embeddings = out_channels, groups


def grouped_copy(trunk: TrunkInfo, groups: int = 4, last_stride: int = 1, init: SliceInit = "first") -> GroupedLayer4:
    """Grouped copy of the trunk's layer4 (stride 1 by default, as in the official code)."""
    stage = group_convs(set_first_stride(copy.deepcopy(trunk.layer4), last_stride), groups, init)
    return GroupedLayer4(stage, trunk.out_channels, groups)


BRANCHES.register("grouped_layer4")(grouped_copy)
