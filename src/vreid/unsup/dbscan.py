"""DBSCAN on a sparse kNN graph (N x k distances and indices), in O(Nk) memory.

Same clusters as scikit-learn's DBSCAN on the equivalent precomputed sparse distance matrix (row i holds the
pairs (i, I[i, m]) with distance R[i, m]; a point is its own neighbour): core points are those with at least
`min_samples` neighbours within eps; clusters are the components of core points linked within eps; a border
point joins the cluster scikit-learn's expansion reaches first, i.e. the one with the smallest label among the
clusters of the core points that list it; clusters are numbered in order of their smallest core point.
"""
from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def sparse_dbscan(dist: np.ndarray, idx: np.ndarray, eps: float, min_samples: int = 4) -> np.ndarray:
    """Cluster label per row (-1 = noise) from a kNN graph `(dist, idx)` of shape N x k.

    Core-to-core links are used in both directions; on the re-ranked graph with eps < 1 the links are mutual
    anyway (non-mutual pairs have distance exactly 1), so this is scikit-learn's result.
    """
    dist, idx = np.asarray(dist), np.asarray(idx)
    n = dist.shape[0]
    rows = np.repeat(np.arange(n), dist.shape[1])
    within = (dist <= eps).ravel() & (idx.ravel() >= 0)          # faiss marks missing neighbours with -1
    src, dst = rows[within], idx.ravel()[within]
    counts = np.bincount(src, minlength=n) + np.bincount(
        np.arange(n), weights=~_self_listed(src, dst, n), minlength=n).astype(np.int64)
    core = counts >= min_samples
    labels = np.full(n, -1, np.int64)
    if not core.any():
        return labels
    link = core[src] & core[dst]
    graph = coo_matrix((np.ones(int(link.sum()), np.int8), (src[link], dst[link])), shape=(n, n)).tocsr()
    _, comp = connected_components(graph, directed=True, connection="weak")
    core_idx = np.flatnonzero(core)                               # ascending: first hit = smallest core point
    comps, first = np.unique(comp[core_idx], return_index=True)
    order = np.empty(len(comps), np.int64)
    order[np.argsort(first)] = np.arange(len(comps))
    comp_label = np.full(comp.max() + 1, -1, np.int64)
    comp_label[comps] = order
    labels[core_idx] = comp_label[comp[core_idx]]
    border = core[src] & ~core[dst]
    if border.any():
        best = np.full(n, np.iinfo(np.int64).max, np.int64)
        np.minimum.at(best, dst[border], labels[src[border]])
        reached = best < np.iinfo(np.int64).max
        labels[reached] = best[reached]
    return labels


def _self_listed(src: np.ndarray, dst: np.ndarray, n: int) -> np.ndarray:
    """Whether each point already lists itself within eps (otherwise it still counts as its own neighbour)."""
    listed = np.zeros(n, bool)
    listed[src[src == dst]] = True
    return listed


def drop_small_clusters(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Relabel clusters with fewer than `min_size` members as -1 and renumber the rest 0..C-1 (order kept)."""
    labels = np.asarray(labels, np.int64).copy()
    keep = labels >= 0
    if not keep.any():
        return labels
    sizes = np.bincount(labels[keep])
    labels[keep & (sizes[np.maximum(labels, 0)] < min_size)] = -1
    kept = np.flatnonzero(sizes >= min_size)
    remap = np.full(len(sizes), -1, np.int64)
    remap[kept] = np.arange(len(kept))
    labels[labels >= 0] = remap[labels[labels >= 0]]
    return labels
