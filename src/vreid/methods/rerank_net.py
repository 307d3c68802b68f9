"""`rerank_net`: the learned contextual re-ranker of "Moving Towards Centers" (Zhou et al., TMM 2022), a
reconstruction: it trains on the extracted features of another run (`model.features`), not on images, and is used
at evaluation as the re-ranker `contextual` (`vreid eval --rerank contextual --rerank-model RUN`).

Each training probe is a row of the training split with its k nearest other rows; the network predicts, per
neighbour, whether it shares the probe's identity (binary cross-entropy, positives weighted by #neg / #pos).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from vreid.config.loader import bounds
from vreid.methods.base import METHODS, Batch, DataInfo, MethodConfig, ReidMethod
from vreid.models.contextual import ContextualNetConfig, ContextualRerankNet, expand_embeddings


@dataclass
class RerankNetConfig(MethodConfig):
    name: str = "rerank_net"
    #: the features to train on: a run folder (its model embeds the training split) or a `vreid extract` .npz
    features: str = ""
    k: int = field(default=20, metadata=bounds(1))
    dim: int = field(default=512, metadata=bounds(1))
    layers: int = field(default=2, metadata=bounds(1))
    heads: int = field(default=8, metadata=bounds(1))
    slots: int = field(default=8, metadata=bounds(1))
    dropout: float = field(default=0.1, metadata=bounds(0, 1))
    rank_embedding: bool = True
    similarity_token: bool = False
    #: the expansion x + sum_j c_j^gamma x_j
    gamma: float = field(default=1.0, metadata=bounds(above=0))
    #: train-time input noise against the too clean training embeddings: dropout p, Gaussian sigma
    feature_dropout: float = field(default=0.1, metadata=bounds(0, 1))
    feature_noise: float = field(default=0.01, metadata=bounds(0))
    #: probability that a probe's neighbours are shuffled (their rank order hidden)
    shuffle_prob: float = field(default=0.1, metadata=bounds(0, 1))
    #: BCE weight of the positives; 0 = #neg / #pos of each batch's neighbourhoods
    pos_weight: float = field(default=0.0, metadata=bounds(0))

    def validate(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")


@METHODS.register("rerank_net")
class RerankNet(ReidMethod):
    Config = RerankNetConfig
    inputs = "features"
    #: the re-ranker that evaluates it (on the source's query and gallery features)
    rerank = "contextual"

    def __init__(self, cfg: RerankNetConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        self.neighbours = cfg.k
        # the trainer sets feature_dim from the features; 0 (not known: a settings check before they are read)
        # builds the ResNet-50 size
        self.net = ContextualRerankNet(ContextualNetConfig(
            in_dim=info.feature_dim or 2048, k=cfg.k, dim=cfg.dim, layers=cfg.layers, heads=cfg.heads, slots=cfg.slots,
            dropout=cfg.dropout, rank_embedding=cfg.rank_embedding, similarity_token=cfg.similarity_token))

    def _augment(self, tokens: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        if cfg.feature_noise > 0:
            tokens = tokens + cfg.feature_noise * torch.randn_like(tokens)
        tokens = F.dropout(tokens, cfg.feature_dropout, training=True)
        if cfg.shuffle_prob > 0:
            b, k = targets.shape
            shuffled = torch.rand(b, device=tokens.device) < cfg.shuffle_prob
            perm = torch.where(shuffled[:, None], torch.rand(b, k, device=tokens.device).argsort(1),
                               torch.arange(k, device=tokens.device).expand(b, k))
            order = torch.cat([torch.zeros(b, 1, dtype=torch.long, device=tokens.device), perm + 1], 1)
            tokens = tokens.gather(1, order[..., None].expand_as(tokens))
            targets = targets.gather(1, perm)
        return tokens, targets

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        tokens, targets = F.normalize(batch["features"], dim=-1), batch["targets"]
        if self.training:
            tokens, targets = self._augment(tokens, targets)
        return {"logits": self.net(tokens), "targets": targets}

    def losses(self, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        targets = outputs["targets"]
        weight = self.cfg.pos_weight
        if weight <= 0:
            pos = targets.sum()
            weight = float(((targets.numel() - pos) / pos.clamp(min=1)).clamp(min=1e-3))
        return {"bce": F.binary_cross_entropy_with_logits(
            outputs["logits"], targets, pos_weight=torch.tensor(weight, device=targets.device))}

    @torch.no_grad()
    def embed(self, features: torch.Tensor, camera_ids: torch.Tensor | None = None,
              viewpoints: torch.Tensor | None = None) -> torch.Tensor:
        """Neighbourhoods (B, k+1, d) [probe; neighbours] -> the probes' refined embeddings (B, d)."""
        tokens = F.normalize(features, dim=-1)
        weights = torch.sigmoid(self.net(tokens))
        return expand_embeddings(tokens[:, 0], tokens[:, 1:], weights, self.cfg.gamma)
