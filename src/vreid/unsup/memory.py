"""Cluster memory (one L2-normalised centroid per pseudo-identity, re-initialised at every clustering) and the
two classifier-free losses of the paper: the proxy (centroid) softmax and the batch-hard softmax-triplet."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


class ClusterMemory:
    """Centroids of the current pseudo-labels. `momentum` 0 keeps them fixed until the next clustering (the
    paper); > 0 moves a centroid towards each batch feature of its cluster, as cluster-contrast does."""

    def __init__(self, momentum: float = 0.0) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"memory momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.centroids = torch.zeros(0, 0)

    @torch.no_grad()
    def reset(self, features: torch.Tensor, labels: np.ndarray | torch.Tensor) -> None:
        """Centroid c = normalised mean of the normalised features of its members (labels -1 ignored)."""
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        f = F.normalize(features.float(), dim=1)
        keep = labels >= 0
        num = int(labels.max()) + 1 if keep.any() else 0
        sums = torch.zeros(num, f.shape[1]).index_add_(0, labels[keep], f[keep])
        self.centroids = F.normalize(sums, dim=1)

    def to(self, device: torch.device | str) -> "ClusterMemory":
        self.centroids = self.centroids.to(device)
        return self

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        if self.momentum == 0.0 or self.centroids.numel() == 0:
            return
        for f, y in zip(F.normalize(features.detach().float(), dim=1), labels.tolist()):
            if y >= 0:
                c = self.centroids[y].mul_(self.momentum).add_(f, alpha=1 - self.momentum)
                c.div_(c.norm().clamp(min=1e-12))

    def state_dict(self) -> dict[str, Any]:
        return {"centroids": self.centroids.cpu(), "momentum": self.momentum}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.centroids, self.momentum = state["centroids"].clone(), float(state["momentum"])


def proxy_loss(features: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor, temperature: float
               ) -> torch.Tensor:
    """Softmax over the similarities to all centroids; the target is the image's own cluster."""
    logits = F.normalize(features, dim=1) @ centroids.to(features.dtype).T / temperature
    return F.cross_entropy(logits, labels)


def softmax_triplet_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """-log(e^{s+/t} / (e^{s+/t} + e^{s-/t})) with s+ the hardest (lowest) positive similarity, the anchor
    included, and s- the hardest (highest) negative; anchors without an in-batch negative are skipped."""
    f = F.normalize(features, dim=1)
    sim = f @ f.T
    same = labels[:, None] == labels[None, :]
    pos = sim.masked_fill(~same, float("inf")).amin(1)
    neg = sim.masked_fill(same, float("-inf")).amax(1)
    has_neg = (~same).any(1)
    if not has_neg.any():
        return sim.sum() * 0.0
    return F.softplus((neg[has_neg] - pos[has_neg]) / temperature).mean()
