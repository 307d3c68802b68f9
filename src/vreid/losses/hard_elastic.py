"""Hard-distance Elastic (HE) loss (Lee et al., ECCV 2022): every anchor pairs its k-th farthest positive with its
k-th closest negative, so the number of hard pairs adapts to the anchor's own distance distribution.

For anchor q with positive distances d_p and negative distances d_n, the boundary loss
``L(t) = sum_p relu(d_p - t) + sum_n relu(t - d_n)`` is convex and piecewise linear in t; its minimum is reached
where #hard positives = #hard negatives, and equals ``sum_k relu(p_(k) - n_(k))`` with the positives sorted
descending and the negatives ascending (k = 1..min(|P|, |N|)). Keeping only k = 1 with a margin is batch-hard
triplet. Only min(|P|, |N|) negatives can pair, so a top-k over the negatives is enough: O(|N|) per anchor, not a
full sort, which keeps thousands of dictionary negatives cheap.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vreid.losses.triplet import Metric, pairwise_distance

Reduction = Literal["sum", "mean_pairs", "mean_pos", "none"]
REDUCTIONS = ("sum", "mean_pairs", "mean_pos", "none")


def elastic_pair_terms(pos_dist: torch.Tensor, pos_mask: torch.Tensor, neg_dist: torch.Tensor,
                       neg_mask: torch.Tensor, margin: float = 0.0, max_pairs: int | None = None,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Hinge terms of the k-th hardest positive against the k-th hardest negative, for every anchor at once.

    pos_dist (B, Np), neg_dist (B, Nn): anchor-to-candidate distances, with bool masks of the same shapes
    (positives and negatives may be different column sets). Returns (terms, valid), both (B, k):
    ``terms[i, k] = relu(p_(k) - n_(k) + margin)`` where anchor i has a k-th pair, else 0.
    """
    n_pos = int(pos_mask.sum(1).max().item()) if pos_mask.numel() else 0
    k = min(n_pos, neg_dist.shape[1], n_pos if max_pairs is None else max_pairs)
    if k <= 0:
        empty = pos_dist.new_zeros(pos_dist.shape[0], 0)
        return empty, empty.bool()
    hardest_pos = pos_dist.masked_fill(~pos_mask, float("-inf")).topk(k, dim=1, largest=True).values
    hardest_neg = neg_dist.masked_fill(~neg_mask, float("inf")).topk(k, dim=1, largest=False).values
    valid = torch.isfinite(hardest_pos) & torch.isfinite(hardest_neg)
    # zero the missing slots before subtracting, so no inf - inf reaches autograd
    diff = torch.where(valid, hardest_pos, 0.0) - torch.where(valid, hardest_neg, 0.0) + margin
    return torch.where(valid, F.relu(diff), 0.0), valid


def reduce_anchor_terms(terms: torch.Tensor, valid: torch.Tensor, n_pos: torch.Tensor,
                        reduction: Reduction) -> torch.Tensor:
    """Per-anchor sum of the pair terms, normalised by `reduction`; averaged over anchors that have a pair
    ("none": the (B,) per-anchor values, 0 where an anchor has no pair)."""
    per_anchor = terms.sum(1)
    if reduction == "mean_pairs":  # by the elastic number of active pairs
        per_anchor = per_anchor / (terms > 0).sum(1).clamp(min=1)
    elif reduction == "mean_pos":
        per_anchor = per_anchor / n_pos.clamp(min=1)
    elif reduction not in ("sum", "none"):
        raise ValueError(f"unknown reduction '{reduction}'; available: {', '.join(REDUCTIONS)}")
    if reduction == "none":
        return per_anchor
    has_pair = valid.any(1)
    if not has_pair.any():
        return terms.sum() * 0.0
    return per_anchor[has_pair].mean()


def hard_elastic_loss(dist: torch.Tensor, pos_mask: torch.Tensor, neg_mask: torch.Tensor, margin: float = 0.0,
                      reduction: Reduction = "mean_pairs", max_pairs: int | None = None) -> torch.Tensor:
    """HE loss from a distance matrix and masks (see the module docstring)."""
    terms, valid = elastic_pair_terms(dist, pos_mask, dist, neg_mask, margin, max_pairs)
    return reduce_anchor_terms(terms, valid, pos_mask.sum(1), reduction)


class HardElasticLoss(nn.Module):
    """HE loss over a batch and an optional dictionary of constant key features with their labels.

    Positives: the other same-label samples of the batch (never dictionary entries). Negatives: batch samples and
    dictionary entries with another label; dictionary slots with label < 0 are empty and ignored.
    ``max_pairs=1`` with a margin is batch-hard triplet (over batch + dictionary negatives).
    """

    def __init__(self, margin: float = 0.0, reduction: Reduction = "mean_pairs", max_pairs: int | None = None,
                 normalize: bool = False, metric: Metric = "euclidean") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction '{reduction}'; available: {', '.join(REDUCTIONS)}")
        self.margin, self.reduction, self.max_pairs = margin, reduction, max_pairs
        self.normalize, self.metric = normalize, metric

    def forward(self, features: torch.Tensor, labels: torch.Tensor, memory: torch.Tensor | None = None,
                memory_labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.normalize:
            features = F.normalize(features, dim=1)
        b = features.shape[0]
        same = labels[:, None] == labels[None, :]
        pos = same & ~torch.eye(b, dtype=torch.bool, device=features.device)
        batch_dist = pairwise_distance(features, features, self.metric)
        neg_dist, neg = batch_dist, ~same
        if memory is not None and memory.shape[0] > 0:
            mem_dist, mem_neg = self._closest_memory_negatives(features, labels, memory, memory_labels, pos)
            neg_dist = torch.cat([batch_dist, mem_dist], dim=1)
            neg = torch.cat([neg, mem_neg], dim=1)
        terms, valid = elastic_pair_terms(batch_dist, pos, neg_dist, neg, self.margin, self.max_pairs)
        return reduce_anchor_terms(terms, valid, pos.sum(1), self.reduction)

    def _closest_memory_negatives(self, features: torch.Tensor, labels: torch.Tensor, memory: torch.Tensor,
                                  memory_labels: torch.Tensor, pos: torch.Tensor,
                                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each anchor's k closest dictionary negatives (k = the most pairs any anchor can form), as (B, k)
        distances with gradient and a validity mask. Only these can pair, so the (B, M) search runs without
        autograd and the backward pass touches B x k keys instead of B x M: same loss and gradient, half the
        matmul work of differentiating through the full distance matrix."""
        memory = memory.detach().to(features.dtype)
        n_pos = int(pos.sum(1).max().item())
        k = min(memory.shape[0], n_pos if self.max_pairs is None else min(n_pos, self.max_pairs))
        if k == 0:
            return features.new_zeros(features.shape[0], 0), pos.new_zeros(features.shape[0], 0)
        with torch.no_grad():
            # a score with each anchor's ranking of the distances, in one pass over the keys (no normalised or
            # squared copy of the whole dictionary): |m|^2 - 2 x.m for Euclidean, -x.m / |m| for cosine
            norms = torch.linalg.vector_norm(memory, dim=1)
            dots = features.detach() @ memory.t()
            if self.normalize or self.metric == "cosine":
                score = -dots / norms.clamp(min=1e-12)
            else:
                score = norms.square()[None, :] - 2.0 * dots
            usable = (memory_labels[None, :] != labels[:, None]) & (memory_labels[None, :] >= 0)
            closest, index = score.masked_fill(~usable, float("inf")).topk(k, dim=1, largest=False)
        keys = memory[index]  # (B, k, D)
        if self.normalize:
            keys = F.normalize(keys, dim=2)
        if self.metric == "cosine":
            dist = 1.0 - (F.normalize(features, dim=1)[:, None, :] * F.normalize(keys, dim=2)).sum(2)
        else:
            dist = (features[:, None, :] - keys).pow(2).sum(2).clamp(min=1e-12)
            dist = dist.sqrt() if self.metric == "euclidean" else dist
        return dist, torch.isfinite(closest)
