"""`bot`: the bag-of-tricks strong baseline (Luo et al.) that the seed methods build on.

Backbone (ResNet-IBN-a, last stride 1) -> pooling -> BNNeck -> bias-free classifier.
Losses: label-smoothed cross entropy on the classifier logits, batch-hard triplet on the pre-BN feature
(hard or soft margin), optional center loss. Retrieval uses the post-BN feature, L2-normalised as BoT ranks it
(its TEST.FEAT_NORM: yes; FastReID's cosine metric ranks the same way); `normalize_embedding: false` keeps it raw.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vreid.config.loader import choices
from vreid.engine.hooks import Hook
from vreid.losses import CenterLoss, CrossEntropyLabelSmooth, TripletLoss
from vreid.methods.base import METHODS, Batch, DataInfo, MethodConfig, ReidMethod
from vreid.models.backbones.config import BackboneConfig, build_backbone
from vreid.models.layers import CLASSIFIERS, BNNeck, make_pool


def _pools():
    from vreid.models.layers import POOLS

    return POOLS


def _classifiers():
    return CLASSIFIERS


@dataclass
class BotConfig(MethodConfig):
    name: str = "bot"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    pooling: str = field(default="gap", metadata=choices(registry=_pools))
    classifier: str = field(default="linear", metadata=choices(registry=_classifiers))
    classifier_scale: float = 30.0
    classifier_margin: float = 0.35
    label_smoothing: float = 0.1
    ce_weight: float = 1.0
    triplet_weight: float = 1.0
    triplet_margin: float = 0.3
    triplet_soft: bool = False
    triplet_normalize: bool = False
    center_weight: float = 0.0
    center_lr: float = 0.5
    neck_feat: Literal["after", "before"] = "after"
    #: L2-normalise the retrieval feature (BoT's TEST.FEAT_NORM); false = un-normalised Euclidean ranking
    normalize_embedding: bool = True


class CenterGradRescale(Hook):
    """Undo the center-loss weight on the centers' gradient, so they move at `center_lr` (as in BoT)."""

    def __init__(self, centers: nn.Parameter, weight: float) -> None:
        self.centers, self.weight = centers, weight

    def after_backward(self, trainer) -> None:
        if self.centers.grad is not None:
            self.centers.grad.mul_(1.0 / self.weight)


def ce_and_triplet(cfg: Any, id_loss: nn.Module, triplet: nn.Module, outputs: dict[str, torch.Tensor],
                   labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The weighted ID loss on `logits` and metric loss on the pre-BN `feat` (`cfg`: any config with `ce_weight`
    and `triplet_weight`; a weight of 0 leaves that loss out)."""
    out = {}
    if cfg.ce_weight > 0:
        out["ce"] = cfg.ce_weight * id_loss(outputs["logits"].float(), labels)
    if cfg.triplet_weight > 0:
        out["triplet"] = cfg.triplet_weight * triplet(outputs["feat"].float(), labels)
    return out


@METHODS.register("bot")
class BagOfTricks(ReidMethod):
    Config = BotConfig

    def __init__(self, cfg: BotConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        self.backbone = build_backbone(cfg.backbone)
        dim = self.backbone.num_features
        self.pool = make_pool(cfg.pooling)
        self.neck = BNNeck(dim)
        self.classifier = CLASSIFIERS.get(cfg.classifier)(
            dim, info.num_classes, **({} if cfg.classifier == "linear" else
                                       {"scale": cfg.classifier_scale, "margin": cfg.classifier_margin})
        )
        self.id_loss = CrossEntropyLabelSmooth(epsilon=cfg.label_smoothing)
        self.triplet = TripletLoss(margin=None if cfg.triplet_soft else cfg.triplet_margin,
                                   normalize=cfg.triplet_normalize)
        self.center = CenterLoss(info.num_classes, dim) if cfg.center_weight > 0 else None

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pre-BN global feature, post-BN feature)."""
        pooled = self.pool(self.backbone.forward_features(images))
        return pooled, self.neck(pooled)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        pooled, bn = self.features(batch["images"])
        logits = self.classifier(bn, batch["labels"])
        return {"feat": pooled, "bn_feat": bn, "logits": logits}

    def losses(self, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        cfg, labels = self.cfg, batch["labels"]
        out = ce_and_triplet(cfg, self.id_loss, self.triplet, outputs, labels)
        if self.center is not None:
            out["center"] = cfg.center_weight * self.center(outputs["feat"].float(), labels)
        return out

    @torch.no_grad()
    def embed(self, images, camera_ids=None, viewpoints=None) -> torch.Tensor:
        pooled, bn = self.features(images)
        feat = bn if self.cfg.neck_feat == "after" else pooled
        return F.normalize(feat, dim=1) if self.cfg.normalize_embedding else feat

    def hooks(self) -> list[Hook]:
        return [CenterGradRescale(self.center.centers, self.cfg.center_weight)] if self.center is not None else []

    def param_groups(self, optim) -> list[dict[str, Any]]:
        groups = super().param_groups(optim)
        if self.center is None:
            return groups
        centers = {id(p) for p in self.center.parameters()}
        for g in groups:
            g["params"] = [p for p in g["params"] if id(p) not in centers]
        return groups + [{"params": list(self.center.parameters()), "lr": self.cfg.center_lr, "weight_decay": 0.0,
                           "fixed_lr": True}]
