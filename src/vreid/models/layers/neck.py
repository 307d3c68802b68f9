"""BNNeck (Luo et al., bag of tricks): a BatchNorm between the metric feature and the classifier."""
from __future__ import annotations

import torch
from torch import nn


class BNNeck(nn.Module):
    """BatchNorm1d whose shift is frozen at zero, so the normalised feature stays centred for cosine ranking."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        self.bn.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x)
