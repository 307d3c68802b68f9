"""`hpgn`: Hybrid Pyramidal Graph Network (Shen et al., "Exploring Spatial Significance via Hybrid Pyramidal Graph
Network for Vehicle Re-identification", T-ITS 2021), official code muzishen/HPGN.

Any map trunk (ResNet-50, last stride 1, officially) gives a C x H x W map. Two branches read it:
- global: global max pooling -> bias-free linear + BN + ReLU -> `embedding_dim` (256);
- pyramid (PGN, vreid.models.hpgn): the map average-pooled by each of `pyramid_pools` (1, 2, 4, 8: 16x16, 8x8,
  4x4, 2x2 maps at 256 px), one spatial graph network of `sgn_depth` (3) layers per scale, each averaged over
  positions, summed -> bias-free linear + BN + ReLU -> `embedding_dim`.
Each branch has its own linear identity classifier (with bias). Losses: label-smoothed CE on both, averaged, weight
2; batch-hard triplet (margin 1.2, Euclidean) on the concatenated feature, weight 1. Retrieval: the concatenated
feature (2 x 256 = 512-d), L2-normalised.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from vreid.config.loader import FieldError
from vreid.losses import CrossEntropyLabelSmooth, TripletLoss
from vreid.methods.base import METHODS, Batch, DataInfo, MethodConfig, ReidMethod
from vreid.models.backbones.config import BackboneConfig, build_backbone
from vreid.models.hpgn import PyramidalGraphNetwork, repeated_scales

logger = logging.getLogger(__name__)


@dataclass
class HpgnConfig(MethodConfig):
    name: str = "hpgn"
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(name="resnet50"))
    #: average-pooling factor of each pyramid scale on the trunk's map (1 = the map itself); [1] = no pyramid
    pyramid_pools: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    #: spatial graph layers stacked in each scale's SGN
    sgn_depth: int = 3
    #: train the propagation matrices, as the official code does (false: fixed 4-neighbour graphs, as the paper)
    learnable_adjacency: bool = False
    #: width of each branch's embedding; the retrieval feature is twice this
    embedding_dim: int = 256
    label_smoothing: float = 0.1
    ce_weight: float = 2.0
    triplet_weight: float = 1.0
    triplet_margin: float = 1.2
    normalize_embedding: bool = True

    def validate(self) -> None:
        pools = self.pyramid_pools
        if not pools or any(k < 1 for k in pools) or len(set(pools)) != len(pools):
            raise FieldError("pyramid_pools", f"needs distinct pooling factors >= 1 (official [1, 2, 4, 8]; [1]: "
                                              f"one scale, no pyramid), got {pools}")
        if self.sgn_depth < 1:
            raise FieldError("sgn_depth", f"must be >= 1 (official 3), got {self.sgn_depth}")
        if self.embedding_dim < 1:
            raise FieldError("embedding_dim", f"must be >= 1 (official 256), got {self.embedding_dim}")
        if self.triplet_margin <= 0:
            raise FieldError("triplet_margin", f"must be > 0 (official 1.2), got {self.triplet_margin}")
        if min(self.ce_weight, self.triplet_weight) < 0 or self.ce_weight + self.triplet_weight == 0:
            raise FieldError("ce_weight", "loss weights must be >= 0 and at least one > 0")


def trunk_map_size(backbone: nn.Module, height: int, width: int) -> tuple[int, int]:
    """The (h, w) of the trunk's final map for height x width images, from one blank image in eval mode."""
    device = next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        shape = backbone.forward_features(torch.zeros(1, 3, height, width, device=device)).shape
    backbone.train(was_training)
    return int(shape[-2]), int(shape[-1])


def embedding_reduction(in_features: int, width: int) -> nn.Sequential:
    """Bias-free linear -> BN -> ReLU (the official 1x1 conv on a 1x1 map), Kaiming-initialised (fan in)."""
    linear = nn.Linear(in_features, width, bias=False)
    nn.init.kaiming_normal_(linear.weight, mode="fan_in")
    return nn.Sequential(linear, nn.BatchNorm1d(width), nn.ReLU())


def identity_classifier(in_features: int, num_classes: int) -> nn.Linear:
    """The official classifier: a linear layer with bias, weights N(0, 0.001^2)."""
    classifier = nn.Linear(in_features, num_classes)
    nn.init.normal_(classifier.weight, std=0.001)
    nn.init.zeros_(classifier.bias)
    return classifier


@METHODS.register("hpgn")
class HybridPyramidalGraph(ReidMethod):
    Config = HpgnConfig

    def __init__(self, cfg: HpgnConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        self.backbone = build_backbone(cfg.backbone)
        if getattr(self.backbone, "feature_layout", "map") != "map":
            raise ValueError(f"model.backbone.name: hpgn builds graphs over the positions of a feature map; "
                             f"'{cfg.backbone.name}' gives tokens (use a CNN trunk, e.g. resnet50)")
        channels = self.backbone.num_features
        self.map_size = trunk_map_size(self.backbone, info.height, info.width)
        self.pyramid = PyramidalGraphNetwork(channels, self.map_size, cfg.pyramid_pools, cfg.sgn_depth,
                                             cfg.learnable_adjacency)
        repeats = repeated_scales(self.pyramid.sizes)
        if repeats:
            logger.warning("hpgn: on the %dx%d trunk map, pyramid scale(s) %s repeat an earlier map size (%s); "
                           "fewer model.pyramid_pools (or larger images) give distinct scales", *self.map_size,
                           ", ".join(map(str, repeats)), ", ".join(f"{h}x{w}" for h, w in self.pyramid.sizes))
        self.global_reduction = embedding_reduction(channels, cfg.embedding_dim)
        self.pyramid_reduction = embedding_reduction(channels, cfg.embedding_dim)
        self.num_features = 2 * cfg.embedding_dim
        self.classifier = nn.ModuleDict({"global": identity_classifier(cfg.embedding_dim, info.num_classes),
                                         "pyramid": identity_classifier(cfg.embedding_dim, info.num_classes)})
        self.id_loss = CrossEntropyLabelSmooth(epsilon=cfg.label_smoothing)
        self.triplet = TripletLoss(margin=cfg.triplet_margin)

    def branches(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(global embedding, pyramid embedding), each (B, embedding_dim)."""
        fmap = self.backbone.forward_features(images)
        return self.global_reduction(fmap.amax(dim=(2, 3))), self.pyramid_reduction(self.pyramid(fmap))

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        global_feat, pyramid_feat = self.branches(batch["images"])
        return {"feat": torch.cat([global_feat, pyramid_feat], dim=1),
                "logits_global": self.classifier["global"](global_feat),
                "logits_pyramid": self.classifier["pyramid"](pyramid_feat)}

    def losses(self, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        cfg, labels = self.cfg, batch["labels"]
        out = {}
        if cfg.ce_weight > 0:
            ce = [self.id_loss(outputs[k].float(), labels) for k in ("logits_global", "logits_pyramid")]
            out["ce"] = cfg.ce_weight * (ce[0] + ce[1]) / 2
        if cfg.triplet_weight > 0:
            out["triplet"] = cfg.triplet_weight * self.triplet(outputs["feat"].float(), labels)
        return out

    @torch.no_grad()
    def embed(self, images, camera_ids=None, viewpoints=None) -> torch.Tensor:
        feat = torch.cat(self.branches(images), dim=1)
        return F.normalize(feat, dim=1) if self.cfg.normalize_embedding else feat
