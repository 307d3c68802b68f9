"""`moreid`: MoReID (Lee et al., ECCV 2022): the SBS trunk trained with cross entropy and the Hard-distance Elastic
loss, whose negatives come from the batch and from a dictionary of key embeddings.

- the key encoder is an EMA copy (momentum m = 0.997) of the query trunk (backbone + GeM [+ BNNeck]);
- the dictionary is a FIFO of `dict_size` keys with their identity labels, filled after every step with the keys
  of the whole batch (all processes under DDP);
- per anchor, positives are the other same-identity samples of the current batch only (stale dictionary positives
  disagree with the current ones); negatives are the batch's other identities plus the dictionary entries of other
  identities. Batch distances use query features (with gradient), dictionary distances use the constant keys.

`dict_size: 0` gives SBS + HE; `he_max_pairs: 1` with `he_margin: 0.3` gives batch-hard triplet over the batch and
the dictionary (the two ablations of docs/methods/moreid.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from vreid.engine.hooks import Hook
from vreid.engine.momentum import FeatureQueue, MomentumQueueHook, make_key_encoder
from vreid.losses.hard_elastic import HardElasticLoss
from vreid.methods.base import METHODS, Batch, DataInfo
from vreid.methods.sbs import SbsConfig, StrongerBaseline


@dataclass
class MoReIDConfig(SbsConfig):
    name: str = "moreid"
    triplet_weight: float = 0.0  # HE takes the triplet's place; >0 adds the batch-only triplet as well
    he_weight: float = 1.0
    he_margin: float = 0.0
    he_reduction: Literal["mean_pairs", "mean_pos", "sum"] = "mean_pairs"
    #: at most this many (positive, negative) pairs per anchor; None = elastic (all), 1 = batch-hard triplet
    he_max_pairs: int | None = None
    #: the feature HE consumes and the dictionary stores: pooled ("before" BNNeck) or "after" BNNeck
    metric_feature: Literal["before", "after"] = "before"
    #: L2-normalise features (and keys) before distances
    normalize: bool = False
    dict_size: int = 8192  # 0 = no dictionary, no key encoder
    momentum: float = 0.997

    def validate(self) -> None:
        super().validate()
        if self.dict_size < 0:
            raise ValueError("dict_size must be >= 0 (0 turns the dictionary off)")
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError("momentum must be in [0, 1]")
        if self.he_max_pairs is not None and self.he_max_pairs < 1:
            raise ValueError("he_max_pairs must be >= 1, or null for all pairs")


class TrunkEncoder(nn.Module):
    """backbone -> pooling [-> BNNeck]: the part of the model the key encoder copies."""

    def __init__(self, backbone: nn.Module, pool: nn.Module, neck: nn.Module | None) -> None:
        super().__init__()
        self.backbone, self.pool, self.neck = backbone, pool, neck

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.backbone.forward_features(images))
        return x if self.neck is None else self.neck(x)


@METHODS.register("moreid")
class MoReID(StrongerBaseline):
    Config = MoReIDConfig

    def __init__(self, cfg: MoReIDConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        self.he = HardElasticLoss(margin=cfg.he_margin, reduction=cfg.he_reduction, max_pairs=cfg.he_max_pairs,
                                  normalize=cfg.normalize)
        self.queue: FeatureQueue | None = None
        if cfg.dict_size > 0:
            query = TrunkEncoder(self.backbone, self.pool, self.neck if cfg.metric_feature == "after" else None)
            # set around nn.Module.__setattr__: not submodules, so neither in the exported weights nor seen by
            # the optimizer or DDP; MomentumQueueHook saves them in checkpoints
            object.__setattr__(self, "query_encoder", query)
            object.__setattr__(self, "key_encoder", make_key_encoder(query))
            self.queue = FeatureQueue(cfg.dict_size, self.backbone.num_features)

    def _metric_key(self) -> str:
        return "feat" if self.cfg.metric_feature == "before" else "bn_feat"

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        outputs = super().forward(batch)
        if self.queue is not None:
            images = batch["images"]
            with torch.no_grad():
                self.key_encoder.to(images.device).train(self.training)
                outputs["keys"] = self.key_encoder(images).float()
        return outputs

    def losses(self, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        out = super().losses(outputs, batch)
        if self.cfg.he_weight > 0:
            memory = memory_labels = None
            if self.queue is not None:
                feats = outputs[self._metric_key()]
                self.queue.to(feats.device)
                memory, memory_labels = self.queue.features, self.queue.labels
            out["he"] = self.cfg.he_weight * self.he(outputs[self._metric_key()].float(), batch["labels"],
                                                     memory, memory_labels)
        return out

    def hooks(self) -> list[Hook]:
        hooks = super().hooks()
        if self.queue is not None:
            hooks.append(MomentumQueueHook(self.key_encoder, self.query_encoder, self.queue, self.cfg.momentum))
        return hooks
