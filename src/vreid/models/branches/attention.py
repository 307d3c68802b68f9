"""Branch `bot_stack` (was `bot`): Bottleneck-Transformer blocks (BoTNet, Srinivas et al. 2021), MHSA in place of the 3x3 conv.

`RelPosMHSA` is the multi-head self-attention of those blocks over a fixed-size map, with learned position
embeddings factorised into a row part and a column part (BoTNet's "relative" 2-D position encoding).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vreid.models.branches.registry import BRANCHES, TrunkInfo


#: where the position embedding r enters the logits of query i and key j:
#: "official": r_i . q_j, as the official MBR code (and the BoTNet port it copies) computes it, matmul(r^T, q);
#: "paper": q_i . r_j, BoTNet's q r^T as the paper writes it.
PositionTerm = Literal["official", "paper"]


class RelPosMHSA(nn.Module):
    """Self-attention on a (B, C, H, W) map; logits[i, j] = q_i . k_j + (r_i . q_j or q_i . r_j), r = r_h + r_w.

    q, k, v are 1x1 convs with bias; r_h (heads, d, H, 1) and r_w (heads, d, 1, W) are N(0, 1) at init. As in the
    official MBR code the logits are not scaled by 1/sqrt(d) unless `scaled`, and the position term is r_i . q_j
    unless `position="paper"` (see `PositionTerm`). A map of another size than `resolution` gets the position
    tables resized (bilinear), so evaluation at other image sizes still runs.
    """

    def __init__(self, channels: int, resolution: tuple[int, int], heads: int = 4, scaled: bool = False,
                 position: PositionTerm = "official") -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels do not split into {heads} heads")
        if position not in ("official", "paper"):
            raise ValueError(f"position must be 'official' or 'paper', got {position!r}")
        self.heads, self.head_dim, self.scaled, self.position = heads, channels // heads, scaled, position
        self.query = nn.Conv2d(channels, channels, 1)
        self.key = nn.Conv2d(channels, channels, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        h, w = resolution
        self.rel_h = nn.Parameter(torch.randn(heads, self.head_dim, h, 1))
        self.rel_w = nn.Parameter(torch.randn(heads, self.head_dim, 1, w))

    def positions(self, h: int, w: int) -> torch.Tensor:
        """(heads, d, h*w) position embeddings for an h x w map."""
        rel_h, rel_w = self.rel_h, self.rel_w
        if rel_h.shape[2] != h:
            rel_h = F.interpolate(rel_h.flatten(0, 1)[None], size=(h, 1), mode="bilinear", align_corners=False)[0]
            rel_h = rel_h.view(self.heads, self.head_dim, h, 1)
        if rel_w.shape[3] != w:
            rel_w = F.interpolate(rel_w.flatten(0, 1)[None], size=(1, w), mode="bilinear", align_corners=False)[0]
            rel_w = rel_w.view(self.heads, self.head_dim, 1, w)
        return (rel_h + rel_w).flatten(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        shape = (b, self.heads, self.head_dim, h * w)
        q, k, v = (proj(x).view(shape) for proj in (self.query, self.key, self.value))
        r = self.positions(h, w).to(k.dtype)
        if self.position == "paper":
            logits = torch.einsum("bndi,bndj->bnij", q, k + r[None])  # q.k + q.r in one product
        else:
            logits = torch.einsum("bndi,bndj->bnij", q, k) + torch.einsum("ndi,bndj->bnij", r, q)
        if self.scaled:
            logits = logits * self.head_dim ** -0.5
        attn = logits.softmax(dim=-1)
        out = torch.einsum("bnij,bndj->bndi", attn, v)
        return out.reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return (f"heads={self.heads}, head_dim={self.head_dim}, resolution=({self.rel_h.shape[2]}, "
                f"{self.rel_w.shape[3]}), position={self.position}")


class BoTBlock(nn.Module):
    """Bottleneck with MHSA for the 3x3 conv: 1x1 -> BN-ReLU -> MHSA -> BN-ReLU -> 1x1 -> BN, + shortcut, ReLU.

    The shortcut's 1x1 conv has a bias, as in the official MBR code (`shortcut_bias=False` drops it)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, resolution: tuple[int, int],
                 heads: int = 4, scaled: bool = False, position: PositionTerm = "official",
                 shortcut_bias: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_channels)
        self.mhsa = RelPosMHSA(mid_channels, resolution, heads, scaled, position)
        self.bn2 = nn.BatchNorm2d(mid_channels)
        self.conv3 = nn.Conv2d(mid_channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = None
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=shortcut_bias),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.mhsa(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class BoTStack(nn.Sequential):
    """`blocks` BoT blocks at stride 1 (randomly initialised): in_channels -> out_channels, one embedding."""

    num_embeddings = 1

    def __init__(self, in_channels: int, out_channels: int, resolution: tuple[int, int], blocks: int = 3,
                 heads: int = 4, mid_channels: int | None = None, scaled: bool = False,
                 position: PositionTerm = "official", shortcut_bias: bool = True) -> None:
        mid = mid_channels or out_channels // 4
        super().__init__(*[BoTBlock(in_channels if i == 0 else out_channels, mid, out_channels, resolution,
                                    heads, scaled, position, shortcut_bias) for i in range(blocks)])
        self.out_channels = out_channels
        for block in self:  # the blocks' own 1x1 convs (not the MHSA projections): He init (vreid's choice)
            for conv in (block.conv1, block.conv3, *(block.shortcut or [])[:1]):
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")


def bot_branch(trunk: TrunkInfo, blocks: int = 3, heads: int = 4, mid_channels: int | None = None,
               scaled: bool = False, position: PositionTerm = "official", shortcut_bias: bool = True) -> BoTStack:
    """BoT branch of MBR: for ResNet-50, 1024 -> 2048 channels, 512 mid, 4 heads, at the layer3 resolution."""
    return BoTStack(trunk.in_channels, trunk.out_channels, trunk.resolution, blocks, heads, mid_channels, scaled,
                    position, shortcut_bias)


BRANCHES.register("bot_stack")(bot_branch)
