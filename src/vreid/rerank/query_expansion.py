"""Query expansion baselines: average QE (Chum et al. 2007), alpha-QE (Radenovic et al. 2018), and FastReID's AQE.

All torch, on the features' device.
"""
from __future__ import annotations

from typing import Any

import torch

from vreid.eval.distance import FeatureDistances, auto_chunk_size, iter_blocks
from vreid.rerank.knn import knn_tensors, prepare_on_device, stable_topk


def nearest_gallery(x: torch.Tensor, g: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(cosine similarities, gallery indices), each len(x) x k, most similar first; ties to the lower index.
    Found in query blocks, on x's device."""
    source = FeatureDistances(x, g, "cosine")
    found = [stable_topk(source.block(start, stop).to(x.device), k)
             for start, stop in iter_blocks(len(x), auto_chunk_size(len(g), bytes_per_element=4, device=x.device))]
    dist = torch.cat([d for d, _ in found]) if found else x.new_empty(0, min(k, len(g)))
    idx = torch.cat([i for _, i in found]) if found else torch.empty(0, min(k, len(g)), dtype=torch.long)
    return (1.0 - dist).clamp_(min=0), idx.to(x.device)


def expand_queries(qf: Any, gf: Any, k: int = 5, alpha: float = 0.0, expand_gallery: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised features with each query replaced by its own feature plus its top-k gallery features,
    weighted by similarity**alpha (alpha = 0: plain average), renormalised. Top-k found in query blocks."""
    q, g = prepare_on_device(qf, gf, "cosine")

    def expand(x: torch.Tensor) -> torch.Tensor:
        sim, idx = nearest_gallery(x, g, k)
        w = sim.pow(alpha) if alpha > 0 else torch.ones_like(sim)
        return torch.nn.functional.normalize(x + (w.unsqueeze(-1) * g[idx]).sum(1), dim=1)

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
    q, g = prepare_on_device(qf, gf, "euclidean")   # as given: FastReID averages the raw features
    feats = torch.cat([q, g])
    for _ in range(qe_times):
        feats = fastreid_aqe_round(feats, qe_k, alpha, knn_backend, knn_options)
    return feats[: len(q)], feats[len(q):]


def fastreid_aqe_round(feats: torch.Tensor, qe_k: int = 10, alpha: float = 3.0, knn_backend: str = "torch",
                       knn_options: dict[str, Any] | None = None) -> torch.Tensor:
    """Each row becomes the mean of feature * cos**alpha over its qe_k most cosine-similar rows, itself included."""
    unit = torch.nn.functional.normalize(feats, dim=1)
    sqd, idx, _ = knn_tensors(unit, qe_k, knn_backend, with_row_max=False, **(knn_options or {}))
    k = idx.shape[1]
    cosine = 1.0 - sqd / 2.0                       # |a - b|^2 = 2 - 2 cos(a, b) for unit vectors
    # in float64, then rounded: nearer numpy's float32 power (FastReID's) than torch's cos*cos*cos in float32;
    # cos < 0 kept as FastReID has it (nan for a fractional alpha)
    weights = cosine.double().pow(alpha).float() / k
    mean = torch.zeros_like(feats)
    for m in range(k):                             # one neighbour rank at a time: N x d temporaries, no N x k x d
        mean.add_(feats[idx[:, m]] * weights[:, m:m + 1])
    return mean


class FastReidAqeDistances(FeatureDistances):
    """Distances between FastReID-AQE features (a DistanceSource); "cosine" normalises them, as FastReID's
    build_dist does, "euclidean" takes them as they are."""

    def __init__(self, qf: Any, gf: Any, metric: str = "euclidean", qe_times: int = 1, qe_k: int = 10,
                 alpha: float = 3.0, knn_backend: str = "torch", knn_options: dict[str, Any] | None = None) -> None:
        super().__init__(*fastreid_aqe(qf, gf, qe_times, qe_k, alpha, knn_backend, knn_options), metric)
