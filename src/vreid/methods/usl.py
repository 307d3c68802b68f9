"""`usl`: large-scale fully-unsupervised Re-ID (Bertocco et al., 2023), no identity labels used.

B >= 1 backbones, each with an EMA teacher. Before every epoch (one pipeline iteration) a label source
(`model.labels`, `vreid.unsup.label_sources`; default `cotrain`) clusters each backbone's features (kNN, O(kN)
mutual-kNN Jaccard re-ranking, sparse DBSCAN with eps from a schedule), optionally on a local neighbourhood of
the data, and a random derangement decides whose pseudo-labels each backbone learns from. Losses per backbone: proxy softmax over the cluster
centroids + batch-hard softmax-triplet. Retrieval uses the teachers: the concatenation of their L2-normalised
features over sqrt(B), so squared Euclidean distance is the mean of the backbones' squared distances
(`vreid.unsup.ensemble.EnsembleDistances` gives the paper's mean of Euclidean distances).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vreid.config.loader import choices
from vreid.engine.hooks import Hook
from vreid.engine.momentum import make_key_encoder
from vreid.methods.base import METHODS, Batch, DataInfo, MethodConfig, ReidMethod
from vreid.methods.bot import _pools
from vreid.methods.usl_pipeline import UslTeacherHook
from vreid.models.backbones.config import BackboneConfig, build_backbone
from vreid.models.layers import BNNeck, make_pool
from vreid.unsup.clustering import ClusteringConfig
from vreid.engine.label_source_hook import LabelSourceHook
from vreid.unsup.label_sources import build_label_source, label_source_names
from vreid.unsup.memory import ClusterMemory, proxy_loss, softmax_triplet_loss
from vreid.unsup.schedules import EpsSchedule


@dataclass
class UslConfig(MethodConfig):
    name: str = "usl"
    #: the paper's ensemble is resnet50, OSNet-x1.0 (not in timm) and timm:densenet121; any registered name
    backbones: list[BackboneConfig] = field(default_factory=lambda: [BackboneConfig(name="resnet50")])
    pooling: str = field(default="avgmax", metadata=choices(registry=_pools))   # GAP + GMP, summed
    temperature: float = 0.05
    proxy_weight: float = 1.0
    hard_weight: float = 0.5
    ema_momentum: float = 0.999
    memory_momentum: float = 0.0          # 0: centroids fixed between clusterings (paper)
    embed_with: Literal["teacher", "online"] = "teacher"
    cluster_with: Literal["online", "teacher"] = "online"
    #: who gives the training identities (vreid.unsup.label_sources): cotrain = clustering + the derangement
    #: below (the paper), clustering = each backbone its own clusters, dataset = the true ids (an upper bound)
    labels: str = field(default="cotrain", metadata=choices(registry=label_source_names))
    clustering: ClusteringConfig = field(default_factory=ClusteringConfig)
    eps: EpsSchedule = field(default_factory=EpsSchedule)
    schedule_epochs: int | None = None    # E of the eps schedule; default: the run's schedule.epochs
    neighborhood_fraction: float = 1.0    # p; < 1 clusters and trains on a local neighbourhood of p N images
    sampling: Literal["anchor", "partition"] = "anchor"
    resample_every: int = 3
    cotrain: Literal["derangement", "own"] = "derangement"   # read by labels: cotrain ("own" = clustering)
    #: with B > 1: "union" = each backbone trains on every image its learned labels keep (the paper); "intersection"
    #: = only on images that every backbone's labels keep (far fewer images in early epochs: docs/methods/usl.md)
    cotrain_images: Literal["union", "intersection"] = "union"

    def validate(self) -> None:
        if not self.backbones:
            raise ValueError("usl needs at least one backbone")
        if not 0 < self.neighborhood_fraction <= 1:
            raise ValueError(f"neighborhood_fraction must be in (0, 1], got {self.neighborhood_fraction}")
        if self.resample_every < 1 or self.temperature <= 0:
            raise ValueError("resample_every must be >= 1 and temperature > 0")


class UslEncoder(nn.Module):
    """Backbone -> GAP+GMP -> BN1d; `embed` gives the L2-normalised feature (what clustering and ranking use)."""

    def __init__(self, cfg: BackboneConfig, pooling: str) -> None:
        super().__init__()
        self.backbone = build_backbone(cfg)
        self.pool = make_pool(pooling)
        self.neck = BNNeck(self.backbone.num_features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.neck(self.pool(self.backbone.forward_features(images)))

    @torch.no_grad()
    def embed(self, images: torch.Tensor, camera_ids=None, viewpoints=None) -> torch.Tensor:
        return F.normalize(self(images).float(), dim=1)


@METHODS.register("usl")
class UnsupervisedReid(ReidMethod):
    Config = UslConfig
    unsupervised = True

    def __init__(self, cfg: UslConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        self.encoders = nn.ModuleList(UslEncoder(b, cfg.pooling) for b in cfg.backbones)
        self.teachers = nn.ModuleList(make_key_encoder(e) for e in self.encoders)
        self.memories = [ClusterMemory(cfg.memory_momentum) for _ in cfg.backbones]
        #: per backbone, the pseudo-label it learns from for every training record (-1 = not trained on)
        self.assigned: list[torch.Tensor] = [torch.zeros(0, dtype=torch.long) for _ in cfg.backbones]
        #: embedding width of each backbone, in concatenation order (see vreid.unsup.split_embedding)
        self.widths = [e.neck.bn.num_features for e in self.encoders]

    def set_pseudo_labels(self, b: int, labels: np.ndarray, features: torch.Tensor, subset: np.ndarray) -> None:
        """Backbone b learns `labels` (one per training record); its centroids come from its own `features`
        (rows = `subset` records) grouped by those labels."""
        device = next(self.parameters()).device
        self.assigned[b] = torch.as_tensor(labels, dtype=torch.long, device=device)
        self.memories[b].reset(features, labels[subset])
        self.memories[b].to(device)

    def label_models(self) -> tuple[nn.ModuleList, nn.ModuleList]:
        """(the modules to cluster with, the trained ones), for the label source."""
        return (self.encoders if self.cfg.cluster_with == "online" else self.teachers), self.encoders

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {f"feat{b}": enc(batch["images"]) for b, enc in enumerate(self.encoders)}

    def losses(self, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        cfg, out = self.cfg, {}
        for b in range(len(self.encoders)):
            if self.assigned[b].numel() == 0:
                raise RuntimeError("usl: no pseudo-labels yet; train through the Trainer (its before_epoch hook "
                                   "clusters) or call set_pseudo_labels first")
            y = self.assigned[b][batch["indices"].to(self.assigned[b].device)]
            keep = y >= 0
            if not keep.any():   # under "union" a batch may hold no image this backbone's labels keep
                zero = outputs[f"feat{b}"].sum() * 0.0
                out.update({f"proxy{b}": zero, f"hard{b}": zero})
                continue
            f = outputs[f"feat{b}"][keep].float()
            y = y[keep]
            if cfg.proxy_weight > 0:
                out[f"proxy{b}"] = cfg.proxy_weight * proxy_loss(f, y, self.memories[b].centroids, cfg.temperature)
            if cfg.hard_weight > 0:
                out[f"hard{b}"] = cfg.hard_weight * softmax_triplet_loss(f, y, cfg.temperature)
        return out

    @torch.no_grad()
    def embed(self, images, camera_ids=None, viewpoints=None) -> torch.Tensor:
        models = self.teachers if self.cfg.embed_with == "teacher" else self.encoders
        scale = 1.0 / math.sqrt(len(models))
        return torch.cat([m.embed(images) * scale for m in models], dim=1)

    def hooks(self) -> list[Hook]:
        return [LabelSourceHook(build_label_source(self.cfg.labels, self.cfg), self), UslTeacherHook(self)]
