"""`hrcn`: Heterogeneous Relational Complement Network (Zhao et al., ICCV 2021), for vehicle re-identification.

ResNet-IBN-a trunk (last stride 1) whose block outputs feed two complementary branches (vreid.models.hrcn):
cross-level graph stages over the last blocks of layer2, layer3 and layer4, and regional graphs over concentric
parts of the layer4 map plus the cross-level branch's highest node. Each of their final nodes is embedded to its
own width and the pieces are concatenated (3584-d at the official widths) -> BNNeck -> bias-free classifier.
Losses: label-smoothed CE on the BN'd feature, batch-hard soft-margin triplet on the pre-BN feature. Retrieval:
the pre-BN feature, L2-normalised (cosine ranking). The trunk is frozen, BN statistics included, for the first
`freeze_backbone_epochs` epochs.

Feature layout (official widths): the 4 layer4-stage nodes (the layer3 summary node, then blocks 1-3) give
512, 256, 256, 512; the 6 regional nodes (discs 1-4, full map, high-level node) give 256, 256, 256, 256, 512, 512.
With `cross_level: false` the regional branch has no high-level node (feature 1536-d: the last width is unused);
with `regional: false` the feature is the cross-level part alone (1536-d).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vreid.config.loader import FieldError, choices
from vreid.engine.freeze import FreezeModules
from vreid.engine.hooks import Hook
from vreid.losses import CrossEntropyLabelSmooth, TripletLoss
from vreid.methods.base import METHODS, Batch, DataInfo, MethodConfig, ReidMethod
from vreid.methods.bot import ce_and_triplet
from vreid.models.backbones.config import BackboneConfig, build_backbone
from vreid.models.hrcn import PART_SHAPES, CrossLevelBranch, GraphOptions, RegionalBranch, VectorNode, degenerate_parts
from vreid.models.layers import BNNeck, LinearClassifier

logger = logging.getLogger(__name__)

#: the ResNet stages the cross-level branch reads (layer2, layer3, layer4), lowest first
TAPPED_STAGES = (2, 3, 4)


def _part_shapes():
    return PART_SHAPES


def _positive(values: list[int], key: str, count: int, fix: str) -> None:
    if len(values) != count or any(v < 1 for v in values):
        raise FieldError(key, f"needs {count} values >= 1, got {values}; {fix}")


@dataclass
class HrcnConfig(MethodConfig):
    name: str = "hrcn"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    #: the two branches; turning one off (an ablation) makes the feature of what remains
    cross_level: bool = True
    regional: bool = True
    #: per tapped stage (layer2, layer3, layer4): the last n residual blocks that become nodes (a stage with
    #: fewer blocks gives all it has)
    nodes_per_stage: list[int] = field(default_factory=lambda: [3, 3, 3])
    #: node width of each cross-level stage (official: GCN_CHANNELS 1024 halved per lower stage)
    stage_widths: list[int] = field(default_factory=lambda: [256, 512, 1024])
    #: node width of the regional branch, and its part priors
    regional_width: int = 1024
    regional_parts: int = 4
    part_shape: str = field(default="circle", metadata=choices(registry=_part_shapes))
    #: graph-relation modules: affinity gate, dropout inside the graph convolutions, std of their initial weights
    gate: float = 1e-3
    graph_dropout: float = 0.5
    graph_init_std: float = 0.01
    #: final widths of the layer4-stage nodes: [layer3 summary node, block widths...]; with fewer blocks than
    #: listed, the last widths go to the last blocks
    cross_feature_widths: list[int] = field(default_factory=lambda: [512, 256, 256, 512])
    #: final widths of the regional nodes: [part 1..parts, full map, high-level node]
    regional_feature_widths: list[int] = field(default_factory=lambda: [256, 256, 256, 256, 512, 512])
    label_smoothing: float = 0.1
    ce_weight: float = 1.0
    triplet_weight: float = 1.0
    triplet_soft: bool = True
    triplet_margin: float = 0.3
    #: retrieval feature: "before" the BNNeck (official NECK_FEAT) or "after"; L2-normalised unless told not to
    neck_feat: Literal["before", "after"] = "before"
    normalize_embedding: bool = True
    #: train the BNNeck shift, as the official `last_bn` does (false: vreid's BNNeck, shift frozen at 0)
    neck_bias: bool = True
    #: epochs during which the trunk is frozen, BN statistics included (0 = never)
    freeze_backbone_epochs: int = 20

    def validate(self) -> None:
        if not (self.cross_level or self.regional):
            raise FieldError("regional", "cross_level and regional are both false: turn at least one branch on")
        _positive(self.nodes_per_stage, "nodes_per_stage", 3, "one count per stage layer2, layer3, layer4")
        _positive(self.stage_widths, "stage_widths", 3, "one width per stage layer2, layer3, layer4")
        if self.regional_width < 1 or self.regional_parts < 1:
            raise FieldError("regional_parts", "regional_width and regional_parts must be >= 1")
        _positive(self.cross_feature_widths, "cross_feature_widths", 1 + self.nodes_per_stage[2],
                  "one for the layer3 summary node, then one per layer4 node (nodes_per_stage[2])")
        _positive(self.regional_feature_widths, "regional_feature_widths", self.regional_parts + 2,
                  "one per part (regional_parts), then the full map, then the high-level node")
        if self.gate < 0:
            raise FieldError("gate", f"must be >= 0 (official 0.001), got {self.gate}")
        if not 0 <= self.graph_dropout < 1:
            raise FieldError("graph_dropout", f"must be in [0, 1) (official 0.5), got {self.graph_dropout}")
        if self.graph_init_std <= 0:
            raise FieldError("graph_init_std", f"must be > 0 (official 0.01), got {self.graph_init_std}")
        if min(self.ce_weight, self.triplet_weight) < 0 or self.ce_weight + self.triplet_weight == 0:
            raise FieldError("ce_weight", "loss weights must be >= 0 and at least one > 0")
        if self.freeze_backbone_epochs < 0:
            raise FieldError("freeze_backbone_epochs", "must be >= 0")


def _warn_degenerate_parts(pool_masks, map_size: tuple[int, int], cfg: HrcnConfig) -> None:
    bad = degenerate_parts(pool_masks(*map_size))
    if bad:
        logger.warning("hrcn: on the %dx%d layer4 map, %s part(s) %s are empty or repeat the one before; fewer "
                       "model.regional_parts (or larger images) give distinct regions", *map_size, cfg.part_shape,
                       ", ".join(map(str, bad)))


@METHODS.register("hrcn")
class HeterogeneousRelationalComplement(ReidMethod):
    Config = HrcnConfig

    def __init__(self, cfg: HrcnConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        self.backbone = build_backbone(cfg.backbone)
        if not hasattr(self.backbone, "forward_intermediates") or not hasattr(self.backbone, "stage_channels"):
            raise ValueError(f"model.backbone.name: hrcn reads the block outputs of a vreid ResNet trunk; "
                             f"'{cfg.backbone.name}' has none (use e.g. resnet50_ibn_a)")
        graph = GraphOptions(cfg.gate, cfg.graph_dropout, cfg.graph_init_std)
        channels = self.backbone.stage_channels
        pieces: list[tuple[int, int]] = []  # (node width, final width) of every node of the feature, in order
        self.cross = None
        if cfg.cross_level:
            blocks = [min(n, len(self.backbone.stages[s - 1])) for n, s in zip(cfg.nodes_per_stage, TAPPED_STAGES)]
            self.cross = CrossLevelBranch(TAPPED_STAGES, [channels[s - 1] for s in TAPPED_STAGES],
                                          cfg.stage_widths, blocks, graph)
            summary, *block_widths = cfg.cross_feature_widths
            widths = [summary] + block_widths[len(block_widths) - blocks[2]:]
            pieces += [(self.cross.width, w) for w in widths]
        self.regional = None
        if cfg.regional:
            self.regional = RegionalBranch(channels[3], cfg.regional_width, cfg.regional_parts, cfg.part_shape,
                                           graph, cfg.stage_widths[2] if cfg.cross_level else None)
            widths = cfg.regional_feature_widths[:self.regional.num_nodes]
            pieces += [(self.regional.width, w) for w in widths]
            stride = self.backbone.stage_reductions[3]
            _warn_degenerate_parts(self.regional.pool.masks,
                                   (math.ceil(info.height / stride), math.ceil(info.width / stride)), cfg)
        self.feature_layers = nn.ModuleList([VectorNode(c, w) for c, w in pieces])
        for layer in self.feature_layers:  # FastReID's weights_init_kaiming, as the official feat_layers
            nn.init.kaiming_normal_(layer.linear.weight, mode="fan_in")
            nn.init.zeros_(layer.linear.bias)
        self.num_features = sum(w for _, w in pieces)
        self.neck = BNNeck(self.num_features)
        self.neck.bn.bias.requires_grad_(cfg.neck_bias)
        self.classifier = LinearClassifier(self.num_features, info.num_classes)
        self.id_loss = CrossEntropyLabelSmooth(epsilon=cfg.label_smoothing)
        self.triplet = TripletLoss(margin=None if cfg.triplet_soft else cfg.triplet_margin)
        # a frozen trunk gets no gradient for a while: DDP must not wait for it
        self.find_unused_parameters = cfg.freeze_backbone_epochs > 0

    def nodes(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The related nodes that make the feature, in feature order: layer4-stage nodes, then regional nodes."""
        final, taps = self.backbone.forward_intermediates(images, TAPPED_STAGES if self.cross is not None else ())
        nodes, high_level = [], None
        if self.cross is not None:
            cross = self.cross(taps)
            nodes += cross.unbind(1)
            high_level = cross[:, -1]
        if self.regional is not None:
            nodes += self.regional(final, high_level).unbind(1)
        return nodes

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pre-BN feature, post-BN feature), each (B, num_features)."""
        feat = torch.cat([layer(node) for layer, node in zip(self.feature_layers, self.nodes(images))], dim=1)
        return feat, self.neck(feat)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        feat, bn = self.features(batch["images"])
        return {"feat": feat, "bn_feat": bn, "logits": self.classifier(bn)}

    def losses(self, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        return ce_and_triplet(self.cfg, self.id_loss, self.triplet, outputs, batch["labels"])

    @torch.no_grad()
    def embed(self, images, camera_ids=None, viewpoints=None) -> torch.Tensor:
        feat, bn = self.features(images)
        feat = feat if self.cfg.neck_feat == "before" else bn
        return F.normalize(feat, dim=1) if self.cfg.normalize_embedding else feat

    def hooks(self) -> list[Hook]:
        if self.cfg.freeze_backbone_epochs <= 0:
            return []
        return [FreezeModules(self, ["backbone"], epochs=self.cfg.freeze_backbone_epochs, freeze_bn_stats=True)]
