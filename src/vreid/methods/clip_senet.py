"""`clip_senet`: CLIP-SENet (Lu et al. 2025), CLIP semantic features refined by AFEM and fused with appearance.

Appearance branch (ResNet/IBN-a trunk, GAP) gives T_a; the Semantic Extraction Module (a CLIP image tower on the
same augmented image) gives T_s; T = FC([T_s, T_a]) + AFEM(T_s) [+ camera/viewpoint embeddings] -> BNNeck ->
bias-free classifier. Losses: label-smoothed CE on the logits + supervised contrastive loss on T.
Switches reproduce the paper's ablation rows: `semantic.enabled`, `afem.enabled`, `side_info.camera/viewpoint`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from vreid.config.loader import choices
from vreid.engine.freeze import set_trainable
from vreid.losses import CrossEntropyLabelSmooth, SupConLoss
from vreid.methods.base import METADATA_FIELDS, METHODS, Batch, DataInfo, MetadataNeed, MethodConfig, ReidMethod
from vreid.models.backbones.config import BackboneConfig, build_backbone
from vreid.models.layers import BNNeck, LinearClassifier, make_pool
from vreid.models.semantic import AFEM, AFEM_VARIANTS, ClipSemanticEncoder
from vreid.models.semantic.afem import kaiming_linear
from vreid.models.semantic.clip_encoder import CLIP_MEAN, CLIP_STD
from vreid.models.side_info import SideInfoEmbedding

@dataclass
class SemanticConfig:
    """The Semantic Extraction Module: an open_clip image tower, from a local weights file."""

    enabled: bool = True
    model: str = "ViT-B-32"
    pretrained: str | None = None
    #: an open_clip model config (JSON schema of open_clip's model_configs) for the tower named `model`, for towers
    #: open_clip does not ship (TinyCLIP) and for small CPU towers; used by this model only
    clip_config: dict[str, Any] | None = None
    quick_gelu: bool | None = None
    freeze: bool = False
    lr_factor: float = 0.1
    #: resize to this (h, w) for CLIP; null = feed the Re-ID size and interpolate the position table
    input_size: list[int] | None = None
    mean: list[float] = field(default_factory=lambda: list(CLIP_MEAN))
    std: list[float] = field(default_factory=lambda: list(CLIP_STD))


@dataclass
class AfemConfig:
    enabled: bool = True
    groups: int = 32
    variant: str = field(default="group_scalar", metadata=choices(*AFEM_VARIANTS))


@dataclass
class SideInfoConfig:
    """SIE-style camera / viewpoint embeddings added to T before the BNNeck (VeRi-776: both; VeRi-Wild: camera)."""

    camera: bool = False
    viewpoint: bool = False
    weight: float = 1.0


@dataclass
class ClipSenetConfig(MethodConfig):
    name: str = "clip_senet"
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(name="resnext101_ibn_a"))
    semantic: SemanticConfig = field(default_factory=SemanticConfig)
    afem: AfemConfig = field(default_factory=AfemConfig)
    side_info: SideInfoConfig = field(default_factory=SideInfoConfig)
    label_smoothing: float = 0.1
    ce_weight: float = 1.0
    supcon_weight: float = 1.0
    supcon_temperature: float = 0.07
    #: retrieval feature: T before the BNNeck (what SupCon shapes) or after it
    neck_feat: Literal["before", "after"] = "before"

    def required_metadata(self) -> list[MetadataNeed]:
        """The side-info embeddings switched on: `side_info.camera` and/or `side_info.viewpoint`."""
        return [MetadataNeed(record_field, f"model.side_info.{name}", f"model.side_info.{name}=false")
                for name, record_field in METADATA_FIELDS.items() if getattr(self.side_info, name)]

    def validate(self) -> None:
        if self.afem.enabled and not self.semantic.enabled:
            raise ValueError("afem.enabled needs semantic.enabled (AFEM refines the CLIP embedding)")
        if self.supcon_temperature <= 0:
            raise ValueError("supcon_temperature must be > 0")


@METHODS.register("clip_senet")
class ClipSenet(ReidMethod):
    Config = ClipSenetConfig

    def __init__(self, cfg: ClipSenetConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        self.backbone = build_backbone(cfg.backbone)
        self.pool = make_pool("gap")
        dim = self.backbone.num_features
        self.semantic = self.fusion = self.afem = self.side_info = None
        sem = cfg.semantic
        if sem.enabled:
            self.semantic = ClipSemanticEncoder(sem.model, sem.pretrained, info.mean, info.std, sem.mean, sem.std,
                                                sem.input_size, sem.quick_gelu, sem.clip_config)
            self.fusion = kaiming_linear(nn.Linear(self.semantic.num_features + dim, dim))
            if cfg.afem.enabled:
                self.afem = AFEM(self.semantic.num_features, dim, cfg.afem.groups, cfg.afem.variant)
            if sem.freeze:
                set_trainable(self.semantic, False)
        side = cfg.side_info
        if side.camera or side.viewpoint:
            self.side_info = SideInfoEmbedding(dim, info.num_cameras if side.camera else 0,
                                               info.num_viewpoints if side.viewpoint else 0, side.weight)
        self.neck = BNNeck(dim)
        self.classifier = LinearClassifier(dim, info.num_classes)
        self.id_loss = CrossEntropyLabelSmooth(epsilon=cfg.label_smoothing)
        self.supcon = SupConLoss(temperature=cfg.supcon_temperature)

    def train(self, mode: bool = True) -> "ClipSenet":
        super().train(mode)
        if self.semantic is not None and self.cfg.semantic.freeze:
            self.semantic.eval()  # a frozen tower keeps dropout off and any norm statistics fixed
        return self

    def fused_feature(self, images: torch.Tensor, camera_ids: torch.Tensor | None = None,
                      viewpoints: torch.Tensor | None = None) -> torch.Tensor:
        """T: the fused 2048-d (trunk-width) descriptor, before the BNNeck."""
        t = self.pool(self.backbone.forward_features(images))
        if self.semantic is not None:
            t_s = self.semantic(images)
            t = self.fusion(torch.cat([t_s.to(t.dtype), t], dim=1))
            if self.afem is not None:
                t = t + self.afem(t_s)
        if self.side_info is not None:
            t = t + self.side_info(camera_ids, viewpoints, t.shape[0]).to(t.dtype)
        return t

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        t = self.fused_feature(batch["images"], batch.get("camera_ids"), batch.get("viewpoints"))
        bn = self.neck(t)
        return {"feat": t, "bn_feat": bn, "logits": self.classifier(bn)}

    def losses(self, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        cfg, labels = self.cfg, batch["labels"]
        out = {}
        if cfg.ce_weight > 0:
            out["ce"] = cfg.ce_weight * self.id_loss(outputs["logits"].float(), labels)
        if cfg.supcon_weight > 0:
            out["supcon"] = cfg.supcon_weight * self.supcon(outputs["feat"].float(), labels)
        return out

    @torch.no_grad()
    def embed(self, images, camera_ids=None, viewpoints=None) -> torch.Tensor:
        t = self.fused_feature(images, camera_ids, viewpoints)
        return t if self.cfg.neck_feat == "before" else self.neck(t)

    def param_groups(self, optim) -> list[dict[str, Any]]:
        """The CLIP tower's groups get `semantic.lr_factor` x their learning rate (frozen: not listed at all)."""
        groups = super().param_groups(optim)
        if self.semantic is None:
            return groups
        sem_ids = {id(p) for p in self.semantic.parameters()}
        rest, sem = [], []
        for g in groups:
            mine = [p for p in g["params"] if id(p) not in sem_ids]
            theirs = [p for p in g["params"] if id(p) in sem_ids]
            if mine:
                rest.append({**g, "params": mine})
            if theirs:
                sem.append({**g, "params": theirs, "lr": g["lr"] * self.cfg.semantic.lr_factor})
        return rest + sem
