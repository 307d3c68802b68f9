"""Top-k gallery items per query, one block of queries at a time (for ranked-list pictures and reports)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vreid.eval.distance import FeatureDistances, auto_chunk_size, iter_blocks, source_device, to_numpy


def ranked_topk(qf: Any, gf: Any, k: int = 10, metric: str = "euclidean", chunk_size: int | None = None,
                source: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(indices, distances), each Q x k, nearest first; ties go to the lower gallery index.

    Distances are Euclidean (not squared) for "euclidean" and 1 - cosine for "cosine". Pass `source`
    (any DistanceSource, e.g. a re-ranker's output) to rank by other distances; then they are returned as is.
    """
    src = source if source is not None else FeatureDistances(qf, gf, metric)
    Q, G = src.num_query, src.num_gallery
    k = min(k, G)
    chunk_size = chunk_size or auto_chunk_size(G, bytes_per_element=4, device=source_device(src))
    indices, distances = np.zeros((Q, k), np.int64), np.zeros((Q, k), np.float32)
    for start, stop in iter_blocks(Q, chunk_size):
        indices[start:stop], distances[start:stop] = topk_block(src.block(start, stop), k)
    if source is None and metric == "euclidean":
        np.sqrt(distances, out=distances)
    return indices, distances


def topk_block(dist: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest entries of each row of a block, in stable order (distance, then gallery index)."""
    B, G = dist.shape
    k = min(k, G)
    # topk's order among equal values is unspecified: take a margin, then sort (distance, index) exactly
    kk = min(G, k + 8)
    vals, idx = torch.topk(dist, kk, dim=1, largest=False, sorted=True)
    vals, idx = to_numpy(vals), to_numpy(idx)
    indices, distances = np.zeros((B, k), np.int64), np.zeros((B, k), np.float32)
    for r in range(B):
        if kk < G and vals[r, -1] == vals[r, k - 1]:  # ties run past the margin: rank this row exactly
            row = to_numpy(dist[r])
            order = np.lexsort((np.arange(G), row))[:k]
            indices[r], distances[r] = order, row[order]
            continue
        order = np.lexsort((idx[r], vals[r]))[:k]
        indices[r], distances[r] = idx[r, order], vals[r, order]
    return indices, distances
