"""Query expansion baselines: average QE (Chum et al. 2007) and alpha-QE (Radenovic et al. 2018)."""
from __future__ import annotations

from typing import Any

import torch

from vreid.eval.distance import FeatureDistances, prepare_features
from vreid.eval.ranking import ranked_topk


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
