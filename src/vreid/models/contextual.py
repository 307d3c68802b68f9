"""The correlation network of "Moving Towards Centers" (Zhou et al., TMM 2022), a reconstruction (no official code):
a probe and its k neighbours -> Transformer encoder -> probe-conditioned Contextual Memory (m slots, by attention)
-> each neighbour reconstructed from the memory -> a binary classifier: does the neighbour share the probe's id?

`expand_embeddings` moves each embedding toward its identity centre: x + sum_j c_j^gamma x_j, renormalised.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class ContextualNetConfig:
    """Sizes of the network (defaults: the marked choices of the notes, section 7.3)."""

    in_dim: int = 2048      # d, the re-ID embedding size
    k: int = 20             # neighbours per probe
    dim: int = 512          # D
    layers: int = 2         # L
    heads: int = 8
    slots: int = 8          # m memory slots
    dropout: float = 0.1
    rank_embedding: bool = True
    similarity_token: bool = False  # the scalar cos(p, n_j) through a small MLP, added to each token


class ContextualMemory(nn.Module):
    """m learnable slot queries u_s + h_p cross-attend over the encoded tokens H; a residual FFN follows."""

    def __init__(self, dim: int, slots: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.slots = nn.Parameter(torch.randn(slots, dim) * dim ** -0.5)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h: (B, k+1, D), probe first -> memory (B, m, D)."""
        q = self.slots.unsqueeze(0) + h[:, :1]
        m = self.norm1(self.attn(q, h, h, need_weights=False)[0])
        return self.norm2(m + self.ffn(m))


class ContextualRerankNet(nn.Module):
    """tokens (B, k+1, d) [probe; neighbours by rank], similarities (B, k) -> correlation logits (B, k)."""

    def __init__(self, cfg: ContextualNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        D = cfg.dim
        self.project = nn.Sequential(nn.Linear(cfg.in_dim, D), nn.LayerNorm(D))
        self.rank = nn.Embedding(cfg.k + 1, D) if cfg.rank_embedding else None
        self.similarity = nn.Sequential(nn.Linear(1, D), nn.ReLU(), nn.Linear(D, D)) if cfg.similarity_token else None
        layer = nn.TransformerEncoderLayer(D, cfg.heads, 4 * D, cfg.dropout, batch_first=True)  # post-LN
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.memory = ContextualMemory(D, cfg.slots, cfg.heads, cfg.dropout)
        self.reconstruct = nn.MultiheadAttention(D, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.classifier = nn.Sequential(nn.Linear(4 * D, D), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(D, 1))

    def forward(self, tokens: torch.Tensor, similarities: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = tokens.shape
        t = self.project(tokens)
        if self.rank is not None:
            t = t + self.rank.weight[:n]
        if self.similarity is not None:
            if similarities is None:   # cos(probe, neighbour j) from the tokens themselves
                unit = F.normalize(tokens, dim=-1)
                similarities = (unit[:, 1:] * unit[:, :1]).sum(-1)
            s = torch.cat([similarities.new_ones(b, 1), similarities], 1)   # the probe's own similarity is 1
            t = t + self.similarity(s.unsqueeze(-1))
        h = self.encoder(t)
        memory = self.memory(h)
        hj = h[:, 1:]
        r = self.reconstruct(hj, memory, memory, need_weights=False)[0]   # no residual from h_j
        return self.classifier(torch.cat([r, hj, r * hj, (r - hj).abs()], -1)).squeeze(-1)


def expand_embeddings(x: torch.Tensor, neighbours: torch.Tensor, weights: torch.Tensor, gamma: float = 1.0
                      ) -> torch.Tensor:
    """normalize(x_i + sum_j w_ij^gamma x_j): x (B, d) probes, neighbours (B, k, d), weights (B, k) in [0, 1]."""
    w = weights.clamp(min=0).pow(gamma) if gamma != 1.0 else weights
    return F.normalize(x + (w.unsqueeze(-1) * neighbours).sum(1), dim=1)
