"""`mbr`: multi-branch representation learning with Loss-Branch-Split (Almeida et al., ITSC 2023).

A shared ResNet trunk (stem..layer3) feeds several branches that replace layer4 (`vreid.models.branches`: layer4
copies, BoT MHSA stacks, grouped and hybrid layer4s). Each branch yields one or more embeddings (a grouped branch
one per group); the config says per embedding which losses it carries and with what weight:

- CE on an embedding: BNNeck (frozen shift) -> bias-free classifier, label-smoothed CE on the logits;
- triplet on an embedding: batch-hard triplet on the pre-BN pooled feature;
- LBS = each embedding carries one loss; classical = both. Every embedding has a BN for retrieval.

Optional metadata ("LAI"): per-branch learned vectors, zero at init, indexed by camera and/or viewpoint and added to
the pooled feature before the split and BN. Retrieval: each embedding's BN output, L2-normalised, concatenated.
Named architectures (MBR-4B, MBR-4G, ...) are configs: see `configs/mbr/` and `docs/methods/lbs.md`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vreid.config.loader import choices
from vreid.engine.freeze import FreezeModules
from vreid.engine.hooks import Hook
from vreid.losses import CrossEntropyLabelSmooth, TripletLoss
from vreid.methods.base import METADATA_FIELDS, METHODS, Batch, DataInfo, MetadataNeed, MethodConfig, ReidMethod
from vreid.models.backbones.config import BackboneConfig, build_backbone
from vreid.models.branches import accepted_kinds, build_branch, builder_defaults, current_kind, trunk_info
from vreid.models.layers import BNNeck, LinearClassifier, make_pool
from vreid.models.side_info import rows_for_ids

logger = logging.getLogger(__name__)


def _branches():
    return accepted_kinds()


def _pools():
    from vreid.models.layers import POOLS

    return POOLS


@dataclass
class EmbeddingSpec:
    """The losses one embedding carries, as weights (0 = not carried)."""

    ce: float = 0.0
    triplet: float = 0.0

    def validate(self) -> None:
        if self.ce < 0 or self.triplet < 0:
            raise ValueError("loss weights must be >= 0")
        if self.ce == 0 and self.triplet == 0:
            raise ValueError("an embedding must carry at least one loss (ce or triplet weight > 0)")


@dataclass
class BranchSpec:
    """One branch: its kind (`BRANCHES`), its options, and one EmbeddingSpec per embedding it yields."""

    kind: str = field(default="layer4", metadata=choices(registry=_branches))
    options: dict[str, Any] = field(default_factory=dict)
    embeddings: list[EmbeddingSpec] = field(default_factory=lambda: [EmbeddingSpec(ce=1.0, triplet=1.0)])

    def validate(self) -> None:
        self.kind = current_kind(self.kind)  # an old name warns and becomes the new one in the saved config
        # the builder's defaults written out, so a saved config still builds this model if a default changes
        self.options = {**builder_defaults(self.kind), **self.options}


def _mbr_4b() -> list[BranchSpec]:
    """MBR-4B with the official VeRi-776 weights (alpha 0.6, gamma_ce 0.4, beta 1.0, gamma_t 0.4)."""
    return [BranchSpec("layer4", {"last_stride": 2}, [EmbeddingSpec(ce=0.6)]),
            BranchSpec("layer4", {"last_stride": 2}, [EmbeddingSpec(triplet=1.0)]),
            BranchSpec("bot_stack", {}, [EmbeddingSpec(ce=0.4)]),
            BranchSpec("bot_stack", {}, [EmbeddingSpec(triplet=0.4)])]


@dataclass
class MbrConfig(MethodConfig):
    name: str = "mbr"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    branches: list[BranchSpec] = field(default_factory=_mbr_4b)
    pooling: str = field(default="gap", metadata=choices(registry=_pools))
    label_smoothing: float = 0.1
    #: batch-hard triplet margin on un-normalised Euclidean distances; <= 0 = soft margin.
    triplet_margin: float = 0.1
    #: divide the CE sum and the triplet sum by their number of terms.
    mean_losses: bool = False
    metadata: Literal["none", "camera", "viewpoint", "camera+viewpoint"] = "none"
    #: table sizes; None = from the data (DataInfo.num_cameras, num_viewpoints).
    metadata_cameras: int | None = None
    metadata_viewpoints: int | None = None
    #: the trunk (stem..layer3) gets no gradient for this many first epochs (official `epoch_freeze_L1toL3` - 1).
    freeze_trunk_epochs: int = 0
    #: also hold the frozen trunk's BatchNorm statistics; off as in the official code, where they keep updating.
    freeze_trunk_bn_stats: bool = False

    def required_metadata(self) -> list[MetadataNeed]:
        """Camera and/or viewpoint, as `metadata` names them; without one, the rest of the mode (or none)."""
        used = [] if self.metadata == "none" else self.metadata.split("+")
        return [MetadataNeed(METADATA_FIELDS[m], "model.metadata",
                             "model.metadata=" + ("+".join(o for o in used if o != m) or "none")) for m in used]

    def validate(self) -> None:
        if not self.branches:
            raise ValueError("branches: at least one branch is needed")
        if self.freeze_trunk_epochs < 0:
            raise ValueError("freeze_trunk_epochs must be >= 0")


class EmbeddingHead(nn.Module):
    """BNNeck for every embedding; a bias-free classifier only where CE is carried."""

    def __init__(self, dim: int, num_classes: int, spec: EmbeddingSpec) -> None:
        super().__init__()
        self.neck = BNNeck(dim)
        self.classifier = LinearClassifier(dim, num_classes) if spec.ce > 0 else None


@METHODS.register("mbr")
class MultiBranchReid(ReidMethod):
    Config = MbrConfig
    # LBS leaves some parameters without gradient (e.g. the BN of triplet-only embeddings): DDP must allow it
    find_unused_parameters = True

    def __init__(self, cfg: MbrConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        self.backbone = build_backbone(cfg.backbone)
        trunk = trunk_info(self.backbone, info.height, info.width)
        self.backbone.layer4 = nn.Identity()  # the branches replace it; its weights live on in their copies
        self.branches = nn.ModuleList()
        self.specs: list[EmbeddingSpec] = []
        self.dims: list[int] = []
        for i, spec in enumerate(cfg.branches):
            opts = dict(spec.options)
            try:
                branch = build_branch(spec.kind, trunk, input_roll=opts.pop("input_roll", 0.0), **opts)
            except TypeError as e:  # an option this branch kind does not take: name the config key
                raise ValueError(f"model.branches[{i}].options: {e}; remove it (branch kind {spec.kind})") from None
            if len(spec.embeddings) != branch.num_embeddings:
                raise ValueError(f"branches[{i}] ({spec.kind}) yields {branch.num_embeddings} embeddings but "
                                 f"lists {len(spec.embeddings)} in 'embeddings'")
            self.branches.append(branch)
            self.specs += spec.embeddings
            self.dims += [branch.out_channels // branch.num_embeddings] * branch.num_embeddings
        self.pool = make_pool(cfg.pooling)
        self.heads = nn.ModuleList(EmbeddingHead(d, info.num_classes, s) for d, s in zip(self.dims, self.specs))
        self.metadata_size = self._metadata_size(cfg, info)
        self.metadata = nn.ParameterList(
            nn.Parameter(torch.zeros(self.metadata_size, b.out_channels)) for b in self.branches
        ) if self.metadata_size else None
        if self.metadata is not None:
            logger.info("mbr metadata (%s): %d parameters", cfg.metadata, self.metadata_parameters())
        self.id_loss = CrossEntropyLabelSmooth(epsilon=cfg.label_smoothing)
        self.triplet = TripletLoss(margin=cfg.triplet_margin if cfg.triplet_margin > 0 else None)

    # ----- metadata --------------------------------------------------------------------------------------
    @staticmethod
    def _metadata_size(cfg: MbrConfig, info: DataInfo) -> int:
        cams = cfg.metadata_cameras or info.num_cameras
        views = cfg.metadata_viewpoints or info.num_viewpoints
        return {"none": 0, "camera": cams, "viewpoint": views, "camera+viewpoint": cams * views}[cfg.metadata]

    def metadata_parameters(self) -> int:
        """How many parameters the camera/viewpoint embeddings add (0 without metadata)."""
        return sum(p.numel() for p in self.metadata.parameters()) if self.metadata is not None else 0

    def _metadata_index(self, cams: torch.Tensor | None, views: torch.Tensor | None) -> torch.Tensor | None:
        """The metadata row per image; -1 (no vector) for an image with an unknown (-1 or out of range) label."""
        mode = self.cfg.metadata
        n_views = self.cfg.metadata_viewpoints or self.info.num_viewpoints
        n_cams = self.metadata_size // n_views if mode == "camera+viewpoint" else self.metadata_size
        parts = []
        if "camera" in mode:
            if cams is None:
                return None
            parts.append((cams, n_cams))
        if "viewpoint" in mode:
            if views is None:
                return None
            parts.append((views, n_views))
        index = torch.zeros_like(parts[0][0])
        known = torch.ones_like(parts[0][0], dtype=torch.bool)
        for values, size in parts:
            known &= (values >= 0) & (values < size)
            index = index * size + values.clamp(0, size - 1)
        return torch.where(known, index, torch.full_like(index, -1))

    # ----- features --------------------------------------------------------------------------------------
    def features(self, images: torch.Tensor, cams: torch.Tensor | None = None,
                 views: torch.Tensor | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(pre-BN features, post-BN features), one per embedding, in config order."""
        shared = self.backbone.forward_features(images)
        meta = self._metadata_index(cams, views) if self.metadata is not None else None
        pre = []
        for i, branch in enumerate(self.branches):
            pooled = self.pool(branch(shared))
            if meta is not None:
                pooled = pooled + rows_for_ids(self.metadata[i], meta)
            pre += list(torch.chunk(pooled, branch.num_embeddings, dim=1))
        return pre, [head.neck(f) for head, f in zip(self.heads, pre)]

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        pre, bn = self.features(batch["images"], batch.get("camera_ids"), batch.get("viewpoints"))
        out = {}
        for i, (head, f, g) in enumerate(zip(self.heads, pre, bn)):
            out[f"feat_{i}"], out[f"bn_feat_{i}"] = f, g
            if head.classifier is not None:
                out[f"logits_{i}"] = head.classifier(g)
        return out

    def losses(self, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        labels, cfg = batch["labels"], self.cfg
        n_ce = sum(s.ce > 0 for s in self.specs)
        n_tri = sum(s.triplet > 0 for s in self.specs)
        out = {}
        for i, spec in enumerate(self.specs):
            if spec.ce > 0:
                w = spec.ce / n_ce if cfg.mean_losses else spec.ce
                out[f"ce_{i}"] = w * self.id_loss(outputs[f"logits_{i}"].float(), labels)
            if spec.triplet > 0:
                w = spec.triplet / n_tri if cfg.mean_losses else spec.triplet
                out[f"triplet_{i}"] = w * self.triplet(outputs[f"feat_{i}"].float(), labels)
        return out

    @torch.no_grad()
    def embed(self, images, camera_ids=None, viewpoints=None) -> torch.Tensor:
        _, bn = self.features(images, camera_ids, viewpoints)
        return torch.cat([F.normalize(f, dim=1) for f in bn], dim=1)

    @property
    def embedding_dims(self) -> list[int]:
        """Size of every embedding; the retrieval feature is their concatenation."""
        return list(self.dims)

    def hooks(self) -> list[Hook]:
        if self.cfg.freeze_trunk_epochs > 0:
            return [FreezeModules(self, ["backbone"], self.cfg.freeze_trunk_epochs,
                                  freeze_bn_stats=self.cfg.freeze_trunk_bn_stats)]
        return []
