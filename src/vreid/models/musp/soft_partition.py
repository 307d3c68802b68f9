"""Soft partition of a backbone map into P attention maps, part features pooled under them, and their areas.

At every location the P attention logits (a 3x3 conv) go through a softmax across the maps, so the maps are
non-negative and sum to 1 per pixel: each pixel is shared out among the partitions. A depthwise 3x3 conv makes
the value map; part p is the attention-weighted sum of values over the map. An SE-style gate sees all P parts at
once and rescales their channels. The last `discard` maps are dropped as the insignificant region; the kept parts'
areas (sum of attention, L1-normalised over the kept maps) weight the part distance at test time. The global
feature is the mean of the value map.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def partition_product(attention: torch.Tensor) -> torch.Tensor:
    """MUSP's regulariser: the product over maps of the assignment probabilities, summed over batch and pixels.

    It is largest, (1/P)^P per pixel, where a pixel is shared evenly, and 0 where one map owns it.
    """
    return attention.flatten(2).prod(dim=1).sum()


class PartChannelGate(nn.Module):
    """Channel attention over all parts jointly: z * sigmoid(W2 relu(W1 z)) with z the P part vectors concatenated
    (bias-free linears, reduction 16, as the official SELayer `c_.fc`)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(channels // reduction, channels, bias=False), nn.Sigmoid())

    def forward(self, parts: torch.Tensor) -> torch.Tensor:
        """(B, C, P) -> (B, C, P), each channel of each part rescaled."""
        flat = parts.flatten(1)     # flatten/view_as, not len(): an ONNX export keeps the batch axis dynamic
        return (flat * self.fc(flat)).view_as(parts)


@dataclass
class SoftPartition:
    """What the head makes of one batch of maps."""

    #: (B, P, h, w) soft attention maps (softmax across P at each pixel), the discarded ones last
    attention: torch.Tensor
    #: (B, P - discard, C) kept part features (weighted sums of the value map, channel-gated)
    parts: torch.Tensor
    #: (B, C) mean of the value map, or None without a global feature
    global_feature: torch.Tensor | None
    #: (B, P - discard) kept maps' areas, L1-normalised over the kept maps
    areas: torch.Tensor

    def features(self) -> list[torch.Tensor]:
        """The features the losses and the distance use, in order: kept parts, then the global feature."""
        feats = list(self.parts.unbind(1))
        return feats + ([self.global_feature] if self.global_feature is not None else [])

    def weights(self) -> torch.Tensor:
        """(B, K) distance weight of each feature: the part areas, then 1 / kept maps for the global feature."""
        if self.global_feature is None:
            return self.areas
        kept = self.areas.shape[1]
        return torch.cat([self.areas, torch.full_like(self.areas[:, :1], 1.0 / kept)], dim=1)


class SoftPartitionHead(nn.Module):
    """`key` (3x3 conv to P logits), `value` (depthwise 3x3 conv) and the optional part gate `se`."""

    def __init__(self, channels: int, num_maps: int = 5, discard: int = 1, global_feature: bool = True,
                 channel_gate: bool = True, gate_reduction: int = 16) -> None:
        super().__init__()
        if not 0 <= discard < num_maps:
            raise ValueError(f"discard must be in [0, num_maps), got {discard} of {num_maps}")
        self.num_maps, self.discard, self.global_feature = num_maps, discard, global_feature
        self.key = nn.Conv2d(channels, num_maps, 3, padding=1)
        self.value = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.se = PartChannelGate(channels * num_maps, gate_reduction) if channel_gate else None
        for conv in (self.key, self.value):   # the official _init_params
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)

    @property
    def num_features(self) -> int:
        """How many features the head gives: kept parts plus the global feature."""
        return self.num_maps - self.discard + int(self.global_feature)

    def attention(self, fmap: torch.Tensor) -> torch.Tensor:
        """(B, P, h, w) soft attention maps of a backbone map."""
        return self.key(fmap).softmax(dim=1)

    def forward(self, fmap: torch.Tensor) -> SoftPartition:
        attention = self.attention(fmap)
        value = self.value(fmap).flatten(2)                              # B, C, N
        parts = torch.bmm(value, attention.flatten(2).transpose(1, 2))   # B, C, P: attention-weighted sums
        if self.se is not None:
            parts = self.se(parts)
        kept = self.num_maps - self.discard
        areas = attention.flatten(2).sum(2)[:, :kept]
        areas = areas / areas.sum(1, keepdim=True).clamp(min=1e-12)
        return SoftPartition(attention=attention, parts=parts[:, :, :kept].transpose(1, 2),
                             global_feature=value.mean(2) if self.global_feature else None, areas=areas)
