"""One clustering step of the pipeline: kNN, O(kN) mutual-kNN Jaccard re-ranking, sparse DBSCAN, small
clusters dropped. Nothing here is N x N; memory is O(N k) plus the kNN index."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vreid.progress import working
from vreid.rerank import sparse_rerank_graph
from vreid.unsup.dbscan import drop_small_clusters, sparse_dbscan


@dataclass
class ClusteringConfig:
    """k neighbours for the re-ranking (>= min_samples), DBSCAN minPts, kNN backend and its options
    (`{index: ivf, nlist: 4096, nprobe: 32}` for an approximate faiss index at VeRi-Wild scale)."""

    k: int = 30
    min_samples: int = 4
    knn_backend: str = "faiss"
    knn_options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.min_samples < 1 or self.k < self.min_samples:
            raise ValueError(f"need k >= min_samples >= 1, got k={self.k}, min_samples={self.min_samples}")


@dataclass(frozen=True)
class NeighbourGraph:
    """The Jaccard-re-ranked kNN graph of one feature set (N x k distances and neighbour indices): built once,
    clustered at as many eps as needed (the "too few clusters" retries loosen eps on the same graph)."""

    dist: np.ndarray
    idx: np.ndarray
    min_samples: int

    @classmethod
    def build(cls, features: torch.Tensor | np.ndarray, cfg: ClusteringConfig | None = None) -> NeighbourGraph:
        cfg = cfg or ClusteringConfig()
        x = torch.as_tensor(np.asarray(features) if not torch.is_tensor(features) else features, dtype=torch.float32)
        if x.shape[0] == 0:
            return cls(np.zeros((0, 0), np.float32), np.zeros((0, 0), np.int64), cfg.min_samples)
        with working(f"clustering {x.shape[0]} features", size=x.shape[0]):
            dist, idx = sparse_rerank_graph(x, k=cfg.k, knn_backend=cfg.knn_backend, knn_options=cfg.knn_options)
        return cls(dist, idx, cfg.min_samples)

    def cluster(self, eps: float) -> np.ndarray:
        """Pseudo-label per row: 0..C-1, or -1 for outliers (noise and clusters smaller than min_samples)."""
        if len(self.idx) == 0:
            return np.zeros(0, np.int64)
        return drop_small_clusters(sparse_dbscan(self.dist, self.idx, eps, self.min_samples), self.min_samples)


def cluster_features(features: torch.Tensor | np.ndarray, eps: float, cfg: ClusteringConfig | None = None
                     ) -> np.ndarray:
    """Pseudo-label per row: 0..C-1, or -1 for outliers (noise and clusters smaller than min_samples)."""
    return NeighbourGraph.build(features, cfg).cluster(eps)


@dataclass
class ClusterStats:
    """What a clustering did, measured against true ids (for reports only; never used to train)."""

    images: int
    clusters: int
    outliers: int
    purity: float          # clustered images whose cluster's majority id is their own, over all clustered
    true_ids: int          # distinct true ids among all the images clustered (inliers and outliers)

    def as_row(self) -> dict[str, Any]:
        return {"images": self.images, "clusters": self.clusters, "outliers": self.outliers,
                "purity": round(self.purity, 4), "true_ids": self.true_ids}


def cluster_stats(labels: np.ndarray, true_ids: np.ndarray) -> ClusterStats:
    labels, true_ids = np.asarray(labels, np.int64), np.asarray(true_ids, np.int64)
    inl = labels >= 0
    purity = 0.0
    if inl.any():
        _, tid = np.unique(true_ids[inl], return_inverse=True)
        pairs = labels[inl] * (tid.max() + 1) + tid
        keys, counts = np.unique(pairs, return_counts=True)
        best = np.zeros(labels.max() + 1, np.int64)
        np.maximum.at(best, keys // (tid.max() + 1), counts)
        purity = float(best.sum() / inl.sum())
    return ClusterStats(images=len(labels), clusters=int(labels.max() + 1) if inl.any() else 0,
                        outliers=int((~inl).sum()), purity=purity, true_ids=len(np.unique(true_ids)))
