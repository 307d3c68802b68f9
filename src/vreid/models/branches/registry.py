"""The branch registry, what a branch builder is told about the trunk, and the channel-rolled ("2x") wrapper."""
from __future__ import annotations

import copy
import inspect
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from vreid.registry import Registry

#: name -> builder(trunk: TrunkInfo, **options) -> nn.Module with `out_channels` and `num_embeddings`.
BRANCHES: Registry[Callable[..., nn.Module]] = Registry("branch")

#: old branch kind -> new one: renamed so that no name means two things (`bot` is also a method, `hybrid` also
#: the Hybrid-4B recipe of CE + triplet on every branch).
RENAMED_KINDS = {"bot": "bot_stack", "hybrid": "grouped_mhsa"}


def current_kind(kind: str) -> str:
    """`kind` itself, or, for a renamed kind, its new name with a FutureWarning (shown to users by default)."""
    new = RENAMED_KINDS.get(kind)
    if new is None:
        return kind
    warnings.warn(f"branch kind '{kind}' is deprecated: it is now '{new}' (write kind: {new})", FutureWarning,
                  stacklevel=2)
    return new


def accepted_kinds() -> list[str]:
    """The kinds a config may name: the registered ones and, for now, the renamed old ones."""
    return [*BRANCHES.names(), *RENAMED_KINDS]


def builder_defaults(kind: str) -> dict[str, Any]:
    """The keyword defaults of branch `kind`'s builder ({} for a name that is not registered)."""
    if kind not in BRANCHES.names():
        return {}
    params = inspect.signature(BRANCHES.get(kind)).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


@dataclass
class TrunkInfo:
    """The trunk a branch sits on: its (pretrained) layer4 to copy, channel counts, and the layer3 map size."""

    layer4: nn.Sequential
    in_channels: int
    out_channels: int
    resolution: tuple[int, int]


def trunk_info(backbone: nn.Module, height: int, width: int) -> TrunkInfo:
    """Describe a torchvision-style ResNet (``layer1..layer4``) for branch builders; layer3 runs at stride 16."""
    if not all(hasattr(backbone, f"layer{i}") for i in range(1, 5)):
        raise ValueError(f"branches need a ResNet-style backbone with layer1..layer4 (e.g. resnet50_ibn_a), "
                         f"got {type(backbone).__name__}")
    layer4 = backbone.layer4
    first = layer4[0]
    in_channels = first.conv1.in_channels
    out_channels = backbone.num_features

    def down(n: int) -> int:  # conv7 s2, maxpool s2, layer2 s2, layer3 s2: each rounds up
        for _ in range(4):
            n = math.ceil(n / 2)
        return n

    return TrunkInfo(copy.deepcopy(layer4), in_channels, out_channels, (down(height), down(width)))


class ChannelRoll(nn.Module):
    """Feed a branch the layer3 map with its channels rolled by `fraction` of C (0.5 swaps the halves), so the
    groups of a second grouped copy see other layer3 channels than the first copy's ("2x2G")."""

    def __init__(self, branch: nn.Module, fraction: float) -> None:
        super().__init__()
        self.branch, self.fraction = branch, float(fraction)
        self.out_channels = branch.out_channels
        self.num_embeddings = branch.num_embeddings

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shift = int(round(self.fraction * x.shape[1]))
        return self.branch(torch.roll(x, shifts=-shift, dims=1))

    def extra_repr(self) -> str:
        return f"fraction={self.fraction}"


def build_branch(kind: str, trunk: TrunkInfo, input_roll: float = 0.0, **options: Any) -> nn.Module:
    """Build branch `kind` on `trunk`; `input_roll` (fraction of the layer3 channels) wraps it in `ChannelRoll`."""
    branch = BRANCHES.get(current_kind(kind))(trunk, **options)
    return ChannelRoll(branch, input_roll) if input_roll else branch
