"""Query expansion baselines: average QE (Chum et al. 2007), alpha-QE (Radenovic et al. 2018), and FastReID's AQE."""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from vreid.eval.distance import FeatureDistances, prepare_features
from vreid.eval.ranking import ranked_topk
from vreid.rerank.knn import knn


def expand_queries(qf: Any, gf: Any, k: int = 5, alpha: float = 0.0, expand_gallery: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised features with each query replaced by its own feature plus its top-k gallery features,
    weighted by similarity**alpha (alpha = 0: plain average), renormalised. Top-k found in query blocks."""
    q, g = prepare_features(qf, gf, "cosine")

    def expand(x: torch.Tensor) -> torch.Tensor:
        idx, dist = ranked_topk(x, g, k=k, metric="cosine")
        idx_t = torch.from_numpy(idx)
        sim = (1.0 - torch.from_numpy(dist)).clamp_(min=0)
        w = sim.pow(alpha) if alpha > 0 else torch.ones_like(sim)
        return torch.nn.functional.normalize(x + (w.unsqueeze(-1) * g[idx_t]).sum(1), dim=1)

    return expand(q), (expand(g) if expand_gallery else g)


class QueryExpansionDistances(FeatureDistances):
    """Distances of expanded queries to the gallery (a DistanceSource)."""

    def __init__(self, qf: Any, gf: Any, metric: str = "euclidean", k: int = 5, alpha: float = 0.0,
                 expand_gallery: bool = False) -> None:
        q, g = expand_queries(qf, gf, k, alpha, expand_gallery)
        super().__init__(q, g, metric)


class AlphaQueryExpansionDistances(QueryExpansionDistances):
    def __init__(self, qf: Any, gf: Any, metric: str = "euclidean", k: int = 5, alpha: float = 3.0,
                 expand_gallery: bool = False) -> None:
        super().__init__(qf, gf, metric, k, alpha, expand_gallery)


def fastreid_aqe(qf: Any, gf: Any, qe_times: int = 1, qe_k: int = 10, alpha: float = 3.0,
                 knn_backend: str = "torch", knn_options: dict[str, Any] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """FastReID's `aqe` (fastreid/evaluation/query_expansion.py) without its N x N similarity matrix: query and
    gallery features, both expanded `qe_times` times among all Q + G; returned unnormalised, as FastReID does."""
    q, g = prepare_features(qf, gf, "euclidean")   # as given: FastReID averages the raw features
    feats = torch.cat([q, g])
    for _ in range(qe_times):
        feats = fastreid_aqe_round(feats, qe_k, alpha, knn_backend, knn_options)
    return feats[: len(q)], feats[len(q):]


def fastreid_aqe_round(feats: torch.Tensor, qe_k: int = 10, alpha: float = 3.0, knn_backend: str = "torch",
                       knn_options: dict[str, Any] | None = None) -> torch.Tensor:
    """Each row becomes the mean of feature * cos**alpha over its qe_k most cosine-similar rows, itself included."""
    unit = torch.nn.functional.normalize(feats, dim=1)
    sqd, idx, _ = knn(unit, qe_k, knn_backend, with_row_max=False, **(knn_options or {}))
    n, k = idx.shape
    cosine = 1.0 - sqd / 2.0                       # |a - b|^2 = 2 - 2 cos(a, b) for unit vectors
    weights = (np.power(cosine, alpha) / k).astype(np.float32).ravel()   # np.power: cos < 0 as FastReID has it
    mean = sp.csr_matrix((weights, idx.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))
    return torch.from_numpy(np.asarray(mean @ feats.numpy(), dtype=np.float32))


class FastReidAqeDistances(FeatureDistances):
    """Distances between FastReID-AQE features (a DistanceSource); "cosine" normalises them, as FastReID's
    build_dist does, "euclidean" takes them as they are."""

    def __init__(self, qf: Any, gf: Any, metric: str = "euclidean", qe_times: int = 1, qe_k: int = 10,
                 alpha: float = 3.0, knn_backend: str = "torch", knn_options: dict[str, Any] | None = None) -> None:
        super().__init__(*fastreid_aqe(qf, gf, qe_times, qe_k, alpha, knn_backend, knn_options), metric)
