"""O(kN)-memory re-ranking of the large-scale fully-unsupervised Re-ID paper (Bertocco et al., 2023).

On L2-normalised features: kNN lists (self included) with weights exp(-d); mutual neighbours i, j get the
weighted-Jaccard (Ruzicka) distance 1 - sum min(v_i, v_j) / sum max(v_i, v_j) over their lists; a
non-mutual neighbour gets 1. `sparse_rerank_graph` returns that graph (for clustering); `SparseKnnDistances`
turns it into query x gallery distances for evaluation.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vreid.eval.distance import as_tensor, prepare_features
from vreid.rerank.knn import knn


def sparse_rerank_graph(x: Any, k: int = 30, knn_backend: str = "torch", block: int = 4096,
                        knn_options: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(R, I), each N x k: re-ranked distances in [0, 1] and neighbour indices, each row sorted by R."""
    x = torch.nn.functional.normalize(as_tensor(x), dim=1)
    sqd, idx, _ = knn(x, k, knn_backend, with_row_max=False, **(knn_options or {}))
    n, k = idx.shape
    sqd[idx == np.arange(n)[:, None]] = 0.0   # |x|^2 + |x|^2 - 2 x.x leaves rounding noise that sqrt magnifies
    weight = np.exp(-np.sqrt(sqd)).astype(np.float32)
    total = weight.sum(1)
    rerank = np.ones((n, k), np.float32)
    for s in range(0, n, block):
        rows = np.arange(s, min(n, s + block))
        ii, ww = idx[rows], weight[rows]                          # b x k; neighbour j = ii[., m]
        nb, nw = idx[ii], weight[ii]                              # b x k x k: the neighbours' own lists
        mutual = (nb == rows[:, None, None]).any(-1)
        eq = ii[:, None, :, None] == nb[:, :, None, :]            # b x m x (c in N(i)) x (c' in N(j))
        shared = (eq * np.minimum(ww[:, None, :, None], nw[:, :, None, :])).sum((-1, -2))
        union = total[rows][:, None] + total[ii] - shared
        rerank[rows] = np.where(mutual, 1.0 - shared / union, 1.0)
    rerank[idx == np.arange(n)[:, None]] = 0.0
    order = np.argsort(rerank, axis=1, kind="stable")
    return np.take_along_axis(rerank, order, 1), np.take_along_axis(idx, order, 1)


class SparseKnnDistances:
    """Query x gallery distances from the O(kN) graph: (1 - lambda) * R + lambda * d, with R = 1 outside the
    kNN list and d the Euclidean distance of the L2-normalised features (which orders the rest)."""

    def __init__(self, qf: Any, gf: Any, metric: str = "euclidean", k: int = 30, lambda_value: float = 0.3,
                 knn_backend: str = "torch", knn_options: dict[str, Any] | None = None) -> None:
        q, g = prepare_features(qf, gf, "cosine")   # the method is defined on normalised features
        self.q, self.g = q, g
        self.num_query, self.num_gallery = q.shape[0], g.shape[0]
        self.lambda_value = lambda_value
        rerank, idx = sparse_rerank_graph(torch.cat([q, g]), k, knn_backend, knn_options=knn_options)
        self.rerank, self.idx = rerank[: self.num_query], idx[: self.num_query]

    def block(self, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        Q = self.num_query
        cos = torch.mm(self.q[start:stop], self.g.T, out=out) if out is not None else self.q[start:stop] @ self.g.T
        dist = cos.mul_(-2.0).add_(2.0).clamp_(min=0).sqrt_().mul_(self.lambda_value)
        dist.add_(1.0 - self.lambda_value)                       # R = 1 everywhere ...
        idx, rr = self.idx[start:stop], self.rerank[start:stop]
        in_gallery = idx >= Q                                     # ... except on each query's kNN list
        rows = np.nonzero(in_gallery)[0]
        cols = idx[in_gallery] - Q
        r_t, c_t = torch.from_numpy(rows), torch.from_numpy(cols)
        dist[r_t, c_t] += torch.from_numpy((rr[in_gallery] - 1.0) * (1.0 - self.lambda_value))
        return dist
