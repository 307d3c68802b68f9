"""`musp`: Multi-attention-based soft partition network (Lee, Woo, Lee; JCDE 2023), for vehicle re-identification.

ResNet trunk (last stride 1) -> soft partition head (vreid.models.musp): P soft attention maps over the layer4 map
(a softmax across the maps at every pixel), P part features pooled under them, channel-gated jointly, the last
`discard` maps dropped as the insignificant region, plus a global feature (mean of the value map). Each kept
feature has its own BNNeck (shift frozen) and bias-free classifier. Losses, summed over the features: label-
smoothed CE on the BN'd logits, batch-hard triplet (margin 0.3) on the raw feature; plus the product-of-
probabilities regulariser (sum over pixels of the product of the P assignment probabilities).

Retrieval: the embedding packs the L2-normalised features with their area weights (vreid.eval.part_distance
layout, 1 + K + K*C columns, K = kept parts + global) and is ranked by the "weighted_parts" distance, which the
config sets as `eval.metric`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from vreid.config.loader import FieldError
from vreid.eval.part_distance import pack_parts
from vreid.losses import CrossEntropyLabelSmooth, TripletLoss
from vreid.methods.base import METHODS, Batch, DataInfo, MethodConfig, ReidMethod
from vreid.models.backbones.config import BackboneConfig, build_backbone
from vreid.models.layers import BNNeck
from vreid.models.musp import SoftPartition, SoftPartitionHead, partition_product


def _musp_backbone() -> BackboneConfig:
    return BackboneConfig(name="resnet50", last_stride=1)


@dataclass
class MuspConfig(MethodConfig):
    name: str = "musp"
    backbone: BackboneConfig = field(default_factory=_musp_backbone)
    #: P attention maps, of which the last `discard` are dropped as the insignificant region (official 5 and 1)
    num_maps: int = 5
    discard: int = 1
    #: the global feature (mean of the value map) beside the parts (official --has-global)
    global_feature: bool = True
    #: the joint channel gate over all parts (official --channel) and its reduction
    channel_gate: bool = True
    gate_reduction: int = 16
    label_smoothing: float = 0.1
    ce_weight: float = 1.0
    triplet_weight: float = 1.0
    triplet_margin: float = 0.3
    #: weight of the product-of-probabilities regulariser (official 1; 0 turns it off)
    partition_weight: float = 1.0

    def validate(self) -> None:
        if self.num_maps < 1 or not 0 <= self.discard < self.num_maps:
            raise FieldError("discard", f"needs 0 <= discard < num_maps (official 1 of 5), got {self.discard} of "
                                        f"{self.num_maps}")
        if self.gate_reduction < 1:
            raise FieldError("gate_reduction", f"must be >= 1 (official 16), got {self.gate_reduction}")
        if min(self.ce_weight, self.triplet_weight, self.partition_weight) < 0 or \
                self.ce_weight + self.triplet_weight == 0:
            raise FieldError("ce_weight", "loss weights must be >= 0 and ce_weight or triplet_weight > 0")

    def retrieval_metric(self) -> str:
        return "weighted_parts"


@METHODS.register("musp")
class MultiAttentionSoftPartition(ReidMethod):
    Config = MuspConfig

    def __init__(self, cfg: MuspConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        self.backbone = build_backbone(cfg.backbone)
        channels = self.backbone.num_features
        if cfg.channel_gate and channels * cfg.num_maps < cfg.gate_reduction:
            raise ValueError(f"model.gate_reduction: {cfg.gate_reduction} is above the gate's width "
                             f"{channels * cfg.num_maps}; lower it or set model.channel_gate=false")
        self.head = SoftPartitionHead(channels, cfg.num_maps, cfg.discard, cfg.global_feature, cfg.channel_gate,
                                      cfg.gate_reduction)
        count = self.head.num_features
        self.necks = nn.ModuleList([BNNeck(channels) for _ in range(count)])
        self.classifier = nn.ModuleList([nn.Linear(channels, info.num_classes, bias=False) for _ in range(count)])
        for linear in self.classifier:   # the official _init_params: N(0, 0.01)
            nn.init.normal_(linear.weight, std=0.01)
        self.id_loss = CrossEntropyLabelSmooth(epsilon=cfg.label_smoothing)
        self.triplet = TripletLoss(margin=cfg.triplet_margin)

    def partition(self, images: torch.Tensor) -> SoftPartition:
        return self.head(self.backbone.forward_features(images))

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = self.partition(batch["images"])
        feats = out.features()
        logits = [cls(neck(f)) for cls, neck, f in zip(self.classifier, self.necks, feats)]
        return {"feats": torch.stack(feats, 1), "logits": torch.stack(logits, 1),
                "partition": partition_product(out.attention.float())}

    def losses(self, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        cfg, labels = self.cfg, batch["labels"]
        losses = {}
        if cfg.ce_weight > 0:
            losses["ce"] = cfg.ce_weight * sum(self.id_loss(lg.float(), labels) for lg in outputs["logits"].unbind(1))
        if cfg.triplet_weight > 0:
            losses["triplet"] = cfg.triplet_weight * sum(self.triplet(f.float(), labels)
                                                         for f in outputs["feats"].unbind(1))
        if cfg.partition_weight > 0:
            losses["partition"] = cfg.partition_weight * outputs["partition"]
        return losses

    @torch.no_grad()
    def embed(self, images, camera_ids=None, viewpoints=None) -> torch.Tensor:
        out = self.partition(images)
        unit = F.normalize(torch.stack(out.features(), 1).float(), dim=2)
        return pack_parts(unit, out.weights().float())

    @torch.no_grad()
    def attention_maps(self, images: torch.Tensor) -> torch.Tensor:
        """(B, num_maps, h, w): every soft map over the layer4 map, the discarded ones last."""
        return self.head.attention(self.backbone.forward_features(images))
