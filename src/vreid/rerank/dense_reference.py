"""REFERENCE ONLY: the dense k-reciprocal re-ranking as published (Zhong et al., CVPR 2017).

Written from the paper's algorithm in the shape of the widely copied `re_ranking(q_g, q_q, g_g, k1, k2,
lambda)` routine: (Q+G)^2 arrays, a full argsort and per-row Python loops. It exists to check
`vreid.rerank.kreciprocal` and to be timed in benchmarks/rerank_scale.py; never use it on real galleries
(N = 138,517 would need ~77 GB per array).
"""
from __future__ import annotations

import numpy as np


def dense_re_ranking(q_g_dist: np.ndarray, q_q_dist: np.ndarray, g_g_dist: np.ndarray, k1: int = 20,
                     k2: int = 6, lambda_value: float = 0.3) -> np.ndarray:
    """Re-ranked Q x G distances from Euclidean q-g, q-q and g-g distance matrices."""
    num_query = q_g_dist.shape[0]
    full = np.block([[q_q_dist, q_g_dist], [q_g_dist.T, g_g_dist]]).astype(np.float32)
    n = full.shape[0]
    full = np.power(full, 2).astype(np.float32)
    full = np.transpose(full / np.max(full, axis=0))          # each row over its maximum
    ranked = np.argsort(full).astype(np.int32)
    v = np.zeros_like(full, dtype=np.float32)
    half = int(np.around(k1 / 2.0))

    def reciprocal(i: int, k: int) -> np.ndarray:
        forward = ranked[i, :k + 1]
        backward = ranked[forward, :k + 1]
        return forward[np.nonzero((backward == i).any(1))[0]]

    for i in range(n):
        base = reciprocal(i, k1)
        expanded = base
        for candidate in base:
            cand_set = reciprocal(int(candidate), half)
            if len(np.intersect1d(cand_set, base)) > 2.0 / 3 * len(cand_set):
                expanded = np.append(expanded, cand_set)
        expanded = np.unique(expanded)
        weight = np.exp(-full[i, expanded])
        v[i, expanded] = weight / np.sum(weight)
    orig_q = full[:num_query]
    if k2 != 1:
        v_qe = np.zeros_like(v, dtype=np.float32)
        for i in range(n):
            v_qe[i] = np.mean(v[ranked[i, :k2]], axis=0)
        v = v_qe
        del v_qe
    del ranked
    holders = [np.nonzero(v[:, c])[0] for c in range(n)]    # rows with mass in column c
    jaccard = np.zeros_like(orig_q, dtype=np.float32)
    for i in range(num_query):
        shared = np.zeros((1, n), dtype=np.float32)
        for c in np.nonzero(v[i])[0]:
            rows = holders[c]
            shared[0, rows] += np.minimum(v[i, c], v[rows, c])
        jaccard[i] = 1 - shared / (2.0 - shared)
    final = jaccard * (1 - lambda_value) + orig_q * lambda_value
    return final[:, num_query:]


def euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance matrix in float64 (then float32), the input the dense routine expects."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    d = (a64 ** 2).sum(1)[:, None] + (b64 ** 2).sum(1)[None, :] - 2 * a64 @ b64.T
    return np.sqrt(np.maximum(d, 0)).astype(np.float32)
