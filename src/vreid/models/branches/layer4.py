"""Branch `layer4`: a copy of the trunk's (pretrained) layer4 with its own last stride."""
from __future__ import annotations

import copy

from torch import nn

from vreid.models.branches.registry import BRANCHES, TrunkInfo


def set_first_stride(stage: nn.Sequential, stride: int) -> nn.Sequential:
    """Set the stride of a ResNet stage in place: the strided conv of its first block and its downsample.

    Bottleneck blocks stride their 3x3 conv2 (torchvision v1.5), basic blocks their conv1.
    """
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride}")
    first = stage[0]
    conv = first.conv2 if hasattr(first, "conv3") else first.conv1
    conv.stride = (stride, stride)
    if first.downsample is not None:
        first.downsample[0].stride = (stride, stride)
    if hasattr(first, "stride"):
        first.stride = stride
    return stage


class Layer4Copy(nn.Sequential):
    """A ResNet layer4 as a branch: one embedding of `out_channels`."""

    num_embeddings = 1

    def __init__(self, stage: nn.Sequential, out_channels: int) -> None:
        super().__init__(*stage)
        self.out_channels = out_channels


def copy_layer4(trunk: TrunkInfo, last_stride: int = 1) -> Layer4Copy:
    """Deep copy of the trunk's layer4 (its weights, pretrained or not) with stride `last_stride`."""
    return Layer4Copy(set_first_stride(copy.deepcopy(trunk.layer4), last_stride), trunk.out_channels)


BRANCHES.register("layer4")(copy_layer4)
