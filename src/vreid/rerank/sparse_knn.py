"""O(kN)-memory re-ranking of the large-scale fully-unsupervised Re-ID paper (Bertocco et al., 2023).

On L2-normalised features: kNN lists (self included) with weights exp(-d); mutual neighbours i, j get the
weighted-Jaccard (Ruzicka) distance 1 - sum min(v_i, v_j) / sum max(v_i, v_j) over their lists; a
non-mutual neighbour gets 1. `sparse_rerank_graph` returns that graph (for clustering); `SparseKnnDistances`
turns it into query x gallery distances for evaluation. All torch, on the features' device.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vreid.eval.distance import as_tensor
from vreid.rerank.knn import feature_device, knn_tensors, prepare_on_device


#: Entries of the b x k x k x k list compare one step of `rerank_graph` may hold (sets its default block)
COMPARE_BUDGET = 1 << 22


def rerank_graph(x: torch.Tensor, k: int = 30, knn_backend: str = "torch", block: int | None = None,
                 knn_options: dict[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`sparse_rerank_graph` as tensors on x's device (x: features, normalised here); `block` rows at a time."""
    x = torch.nn.functional.normalize(x, dim=1)
    sqd, idx, _ = knn_tensors(x, k, knn_backend, with_row_max=False, **(knn_options or {}))
    n, k = idx.shape
    block = block or max(1, COMPARE_BUDGET // k ** 3)
    itself = idx == torch.arange(n, device=x.device)[:, None]
    sqd = sqd.masked_fill(itself, 0.0)     # |x|^2 + |x|^2 - 2 x.x leaves rounding noise that sqrt magnifies
    weight = torch.exp(-torch.sqrt(sqd))
    total = weight.sum(1)
    rerank = torch.ones((n, k), device=x.device)
    for s in range(0, n, block):
        rows = torch.arange(s, min(n, s + block), device=x.device)
        ii, ww = idx[rows], weight[rows]                          # b x k; neighbour j = ii[., m]
        nb, nw = idx[ii], weight[ii]                              # b x k x k: the neighbours' own lists
        mutual = (nb == rows[:, None, None]).any(-1)
        eq = ii[:, None, :, None] == nb[:, :, None, :]            # b x m x (c in N(i)) x (c' in N(j))
        shared = (eq * torch.minimum(ww[:, None, :, None], nw[:, :, None, :])).sum((-1, -2))
        union = total[rows][:, None] + total[ii] - shared
        rerank[rows] = torch.where(mutual, 1.0 - shared / union, 1.0)
    rerank[itself] = 0.0
    rerank, order = torch.sort(rerank, dim=1, stable=True)
    return rerank, idx.gather(1, order)


def sparse_rerank_graph(x: Any, k: int = 30, knn_backend: str = "torch", block: int | None = None,
                        knn_options: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(R, I), each N x k: re-ranked distances in [0, 1] and neighbour indices, each row sorted by R
    (computed on x's device, returned as numpy arrays)."""
    r, idx = rerank_graph(as_tensor(x).to(feature_device(x)), k, knn_backend, block, knn_options)
    return r.cpu().numpy(), idx.cpu().numpy()


class SparseKnnDistances:
    """Query x gallery distances from the O(kN) graph: (1 - lambda) * R + lambda * d, with R = 1 outside the
    kNN list and d the Euclidean distance of the L2-normalised features (which orders the rest). Blocks are
    on the features' device."""

    def __init__(self, qf: Any, gf: Any, metric: str = "euclidean", k: int = 30, lambda_value: float = 0.3,
                 knn_backend: str = "torch", knn_options: dict[str, Any] | None = None) -> None:
        q, g = prepare_on_device(qf, gf, "cosine")   # the method is defined on normalised features
        self.q, self.g = q, g
        self.num_query, self.num_gallery = q.shape[0], g.shape[0]
        self.lambda_value = lambda_value
        rerank, idx = rerank_graph(torch.cat([self.q, self.g]), k, knn_backend, knn_options=knn_options)
        self.rerank, self.idx = rerank[: self.num_query], idx[: self.num_query]

    def block(self, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        Q = self.num_query
        cos = torch.mm(self.q[start:stop], self.g.T, out=out) if out is not None else self.q[start:stop] @ self.g.T
        dist = cos.mul_(-2.0).add_(2.0).clamp_(min=0).sqrt_().mul_(self.lambda_value)
        dist.add_(1.0 - self.lambda_value)                       # R = 1 everywhere ...
        idx, rr = self.idx[start:stop], self.rerank[start:stop]
        in_gallery = idx >= Q                                     # ... except on each query's kNN list
        rows, cols = torch.nonzero(in_gallery, as_tuple=True)
        dist[rows, idx[rows, cols] - Q] += (rr[in_gallery] - 1.0) * (1.0 - self.lambda_value)
        return dist
