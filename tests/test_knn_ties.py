"""Both kNN backends keep exactly a stable sort's neighbours and order, ties at the k-th place included."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vreid.rerank import knn


def tied_features(n, dim, levels, seed=0):
    """Small-integer features: squared distances are exact small integers in float32, so most of them tie."""
    return torch.from_numpy(np.random.default_rng(seed).integers(0, levels, (n, dim)).astype(np.float32))


def stable_knn(x, k):
    """Reference: float64 squared distances, each full row ordered by (distance, index) with np.lexsort."""
    x64 = x.double().numpy()
    d = ((x64[:, None, :] - x64[None, :, :]) ** 2).sum(-1)
    order = np.lexsort((np.broadcast_to(np.arange(len(d)), d.shape), d))[:, :k]
    return np.take_along_axis(d, order, 1), order


# (levels, dim): 3^4 = 81 distinct points among 301 (ties everywhere), 2^3 = 8 (runs of ~40 equal points,
# longer than any margin), 5^6 (ties mostly at the k-th place)
@pytest.mark.parametrize("levels,dim", [(3, 4), (2, 3), (5, 6)])
@pytest.mark.parametrize("k", [1, 5, 12, 40])
@pytest.mark.parametrize("backend,options", [
    ("torch", {"chunk_size": 37, "block_width": 64}),   # blocks straddle each other's boundaries
    ("torch", {"chunk_size": 50, "block_width": 50}),
    ("torch", {}),                                        # one block
    ("faiss", {"index": "flat"}),
])
def test_knn_equals_stable_full_sort_under_ties(levels, dim, k, backend, options):
    x = tied_features(301, dim, levels, seed=levels * dim)
    ref_dist, ref_idx = stable_knn(x, k)
    dist, idx, row_max = knn(x, k, backend, **options)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)
    x64 = x.double().numpy()
    np.testing.assert_array_equal(row_max, ((x64[:, None] - x64[None]) ** 2).sum(-1).max(1))
