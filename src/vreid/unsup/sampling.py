"""Local neighbourhood sampling: bound the per-iteration data to a fraction p without cutting identities apart.

A subset is the ceil(p N) images most similar (cosine) to one random anchor, a contiguous region of the
embedding space, so most identities near the anchor fall in whole. `disjoint_partitions` is the variant the
official code has but does not call: anchors drawn among the remaining images cut the whole set into pieces.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def subset_size(n: int, fraction: float) -> int:
    if not 0 < fraction <= 1:
        raise ValueError(f"neighbourhood fraction must be in (0, 1], got {fraction}")
    return min(n, max(1, math.ceil(fraction * n - 1e-9)))


def _similarity(features: torch.Tensor, anchor: int, pool: np.ndarray | None = None) -> np.ndarray:
    f = torch.nn.functional.normalize(torch.as_tensor(features, dtype=torch.float32), dim=1)
    cand = f if pool is None else f[torch.from_numpy(pool)]
    return (cand @ f[anchor]).numpy()


def neighbourhood_sample(features: torch.Tensor, fraction: float, anchor: int) -> np.ndarray:
    """Indices of the ceil(fraction * N) rows most similar to row `anchor` (the anchor first), O(N d) + top-k."""
    n = features.shape[0]
    m = subset_size(n, fraction)
    sim = _similarity(features, anchor)
    sim[anchor] = np.inf                                    # the anchor is in its own neighbourhood, even with ties
    top = np.argpartition(-sim, m - 1)[:m] if m < n else np.arange(n)
    return top[np.argsort(-sim[top], kind="stable")]


def disjoint_partitions(features: torch.Tensor, fraction: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Cut all rows into neighbourhoods of ceil(fraction * N): a random anchor among the rows left takes its
    nearest rows left; repeat while at least that many remain; the rest form the last (smaller) piece."""
    n = features.shape[0]
    m = subset_size(n, fraction)
    left = np.arange(n)
    parts = []
    while len(left) >= m and len(left) > 0:
        anchor = int(rng.choice(left))
        sim = _similarity(features, anchor, left)
        sim[np.searchsorted(left, anchor)] = np.inf
        take = np.argpartition(-sim, m - 1)[:m] if m < len(left) else np.arange(len(left))
        parts.append(left[take])
        left = np.delete(left, take)
    if len(left):
        parts.append(left)
    return parts
