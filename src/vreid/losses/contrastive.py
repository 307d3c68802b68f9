"""Supervised contrastive loss (Khosla et al. 2020), also usable across two sets (e.g. image-to-text)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SupConLoss(nn.Module):
    """-mean over anchors of the mean log-probability of their positives, with logits = a . k / temperature.

    ``forward(features, labels)`` contrasts a batch with itself (the anchor itself excluded from the softmax and
    from its positives). ``forward(features, labels, keys, key_labels)`` contrasts anchors with a second set
    (nothing excluded), as in CLIP-ReID's image-to-text stage. Anchors without positives are skipped.
    """

    def __init__(self, temperature: float = 0.07, normalize: bool = True) -> None:
        super().__init__()
        self.temperature, self.normalize = temperature, normalize

    def forward(self, features: torch.Tensor, labels: torch.Tensor, keys: torch.Tensor | None = None,
                key_labels: torch.Tensor | None = None) -> torch.Tensor:
        self_contrast = keys is None
        if self_contrast:
            keys, key_labels = features, labels
        elif key_labels is None:
            raise ValueError("key_labels are required with keys")
        if self.normalize:
            features, keys = F.normalize(features, dim=1), F.normalize(keys, dim=1)
        logits = features @ keys.t() / self.temperature
        positives = labels[:, None] == key_labels[None, :]
        if self_contrast:
            eye = torch.eye(len(features), dtype=torch.bool, device=features.device)
            logits = logits.masked_fill(eye, float("-inf"))
            positives = positives & ~eye
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        n_pos = positives.sum(dim=1)
        has_pos = n_pos > 0
        if not has_pos.any():
            return features.sum() * 0.0
        pos_log_prob = log_prob.masked_fill(~positives, 0.0).sum(dim=1)
        return -(pos_log_prob[has_pos] / n_pos[has_pos]).mean()
