"""Identity classifiers: a bias-free linear layer and cosine classifiers with margins (CosFace, ArcFace, Circle).

All take ``forward(features, labels=None)``; margins are applied to the target class only when labels are given
(training); without labels the cosine classifiers return ``scale * cos``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vreid.registry import Registry

#: name -> classifier class, built as ``cls(in_features, num_classes, **options)``.
CLASSIFIERS: Registry[type[nn.Module]] = Registry("classifier")


@CLASSIFIERS.register("linear")
class LinearClassifier(nn.Module):
    """Bias-free linear layer, weights ~ N(0, 0.001) as in the bag-of-tricks baseline."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.normal_(self.weight, std=0.001)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return F.linear(x, self.weight)


class CosineClassifier(nn.Module):
    """Cosine similarity to L2-normalised class weights, times `scale`; subclasses add a margin on the target."""

    def __init__(self, in_features: int, num_classes: int, scale: float = 30.0, margin: float = 0.0) -> None:
        super().__init__()
        self.scale, self.margin = float(scale), float(margin)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.normal_(self.weight, std=0.01)

    def cosine(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))

    def apply_margin(self, cos: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cos

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos = self.cosine(x)
        if labels is None:
            return self.scale * cos
        target = F.one_hot(labels, cos.shape[1]).bool()
        return self.scale * self.apply_margin(cos, target)

    def extra_repr(self) -> str:
        return f"in={self.weight.shape[1]}, classes={self.weight.shape[0]}, scale={self.scale}, margin={self.margin}"


@CLASSIFIERS.register("cosface")
class CosFace(CosineClassifier):
    """Additive cosine margin: target logit s * (cos - m)."""

    def __init__(self, in_features: int, num_classes: int, scale: float = 30.0, margin: float = 0.35) -> None:
        super().__init__(in_features, num_classes, scale, margin)

    def apply_margin(self, cos: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.where(target, cos - self.margin, cos)


@CLASSIFIERS.register("arcface")
class ArcFace(CosineClassifier):
    """Additive angular margin: target logit s * cos(theta + m), with the usual linear fallback past pi - m."""

    def __init__(self, in_features: int, num_classes: int, scale: float = 30.0, margin: float = 0.5) -> None:
        super().__init__(in_features, num_classes, scale, margin)

    def apply_margin(self, cos: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        m = self.margin
        sin = (1.0 - cos.pow(2)).clamp(min=1e-12).sqrt()
        shifted = cos * math.cos(m) - sin * math.sin(m)
        # cos(theta + m) stops decreasing once theta + m > pi; keep the target penalised monotonically there.
        shifted = torch.where(cos > math.cos(math.pi - m), shifted, cos - math.sin(math.pi - m) * m)
        return torch.where(target, shifted, cos)


@CLASSIFIERS.register("circle")
class CircleSoftmax(CosineClassifier):
    """Circle loss in softmax form (Sun et al. 2020): self-paced weights on target and non-target cosines.

    Unlike CosFace/ArcFace this also rescales non-target logits (by alpha_n), as the circle loss prescribes.
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 64.0, margin: float = 0.35) -> None:
        super().__init__(in_features, num_classes, scale, margin)

    def apply_margin(self, cos: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        m = self.margin
        alpha_p = (1.0 + m - cos.detach()).clamp(min=0.0)
        alpha_n = (cos.detach() + m).clamp(min=0.0)
        return torch.where(target, alpha_p * (cos - (1.0 - m)), alpha_n * (cos - m))
