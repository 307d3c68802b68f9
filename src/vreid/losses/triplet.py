"""Distances, batch-hard mining and the triplet loss (Hermans et al. 2017), all on whole batches at once."""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


Metric = Literal["euclidean", "sqeuclidean", "cosine"]


def pairwise_distance(x: torch.Tensor, y: torch.Tensor, metric: Metric = "euclidean") -> torch.Tensor:
    """(M, D) x (N, D) -> (M, N) distances. Euclidean clamps before the square root so gradients stay finite."""
    if metric == "cosine":
        return 1.0 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).t()
    sq = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1)[None, :] - 2.0 * (x @ y.t())
    sq = sq.clamp(min=1e-12)
    if metric == "sqeuclidean":
        return sq
    if metric == "euclidean":
        return sq.sqrt()
    raise ValueError(f"unknown metric '{metric}'; available: euclidean, sqeuclidean, cosine")


def hard_example_mining(dist: torch.Tensor, labels: torch.Tensor,
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each anchor: the farthest same-label sample and the closest other-label sample.

    Returns (dist_ap, dist_an, index_p, index_n), each (B,). The anchor counts as its own positive (distance ~0),
    so an anchor without another positive gets dist_ap ~ 0; an anchor without negatives gets dist_an = +inf.
    """
    same = labels[:, None] == labels[None, :]
    dist_ap, index_p = dist.masked_fill(~same, float("-inf")).max(dim=1)
    dist_an, index_n = dist.masked_fill(same, float("inf")).min(dim=1)
    return dist_ap, dist_an, index_p, index_n


class TripletLoss(nn.Module):
    """Batch-hard triplet loss: hard margin ``relu(d_ap - d_an + margin)`` or soft margin
    ``softplus(d_ap - d_an)`` when ``margin is None``. Anchors without a negative in the batch are skipped."""

    def __init__(self, margin: float | None = 0.3, normalize: bool = False, metric: Metric = "euclidean") -> None:
        super().__init__()
        self.margin, self.normalize, self.metric = margin, normalize, metric

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            features = F.normalize(features, dim=1)
        dist = pairwise_distance(features, features, self.metric)
        dist_ap, dist_an, _, _ = hard_example_mining(dist, labels)
        valid = torch.isfinite(dist_an)
        if not valid.any():
            return features.sum() * 0.0  # one identity in the batch: nothing to separate, keep the graph
        diff = dist_ap[valid] - dist_an[valid]
        if self.margin is None:
            return F.softplus(diff).mean()
        return F.relu(diff + self.margin).mean()
