"""Center loss (Wen et al. 2016): pull each feature towards a learnable center of its class."""
from __future__ import annotations

import torch
from torch import nn


class CenterLoss(nn.Module):
    """Mean over the batch of ||x_i - c_{y_i}||^2 (no 1/2 factor, as in the bag-of-tricks code).

    The centers are a parameter (``self.centers``); giving them their own learning rate is the trainer's job.
    """

    def __init__(self, num_classes: int, feat_dim: int) -> None:
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (features - self.centers[labels]).pow(2).sum(dim=1).clamp(min=1e-12, max=1e12).mean()
