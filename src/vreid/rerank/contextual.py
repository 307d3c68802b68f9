"""The learned contextual re-ranker ("Moving Towards Centers", Zhou et al. 2022; a reconstruction): every query
and gallery embedding is replaced by itself plus its k nearest gallery neighbours weighted by the predicted
probe-neighbour correlation, renormalised; distances are those of the refined embeddings.

The kNN lists come from blocked top-k passes (no N x N or Q x G matrix is kept); the network runs on `chunk_size`
probes at a time, so memory is O(N k) plus one chunk's (chunk, k + 1, d) tokens.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import torch

from vreid.eval.distance import FeatureDistances
from vreid.models.contextual import ContextualNetConfig, ContextualRerankNet, expand_embeddings
from vreid.rerank.knn import prepare_on_device
from vreid.rerank.query_expansion import nearest_gallery

#: tokens (B, k+1, d) [probe; neighbours] -> correlation weights (B, k) in [0, 1]
Predictor = Callable[[torch.Tensor], torch.Tensor]


def nearest_neighbours(x: torch.Tensor, base: torch.Tensor, k: int, offset: int | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(cosine similarities, indices into `base`), len(x) x k, most similar first: x's top-k among `base`
    found in blocks. `offset`: row i of x is row offset + i of base, and is left out of its own list."""
    if offset is None:
        return nearest_gallery(x, base, k)
    sim, idx = nearest_gallery(x, base, k + 1)
    other = idx != torch.arange(offset, offset + len(x), device=idx.device)[:, None]
    # keep the first k entries that are not the row itself (stable: rank order kept)
    keep = torch.sort((~other).to(torch.int8), dim=1, stable=True).indices[:, :k]
    return sim.gather(1, keep), idx.gather(1, keep)


def refine(x: torch.Tensor, base: torch.Tensor, idx: torch.Tensor, predict: Predictor, gamma: float = 1.0,
           chunk_size: int = 1024) -> torch.Tensor:
    """normalize(x_i + sum_j c_ij^gamma base[idx_ij]) for every row, `chunk_size` rows at a time."""
    out = torch.empty_like(x)
    for s in range(0, len(x), chunk_size):
        probes, neighbours = x[s:s + chunk_size], base[idx[s:s + chunk_size]]
        weights = predict(torch.cat([probes.unsqueeze(1), neighbours], 1))
        out[s:s + chunk_size] = expand_embeddings(probes, neighbours, weights.to(x.dtype), gamma)
    return out


def network_predictor(net: ContextualRerankNet) -> Predictor:
    """The network's sigmoid correlations, in eval mode, without gradients."""
    def predict(tokens: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.sigmoid(net(tokens))
    return predict


def load_contextual_net(path: str | Path) -> tuple[ContextualRerankNet, dict[str, Any]]:
    """The network of a `rerank_net` run (its folder, a checkpoints/step-* folder or its model.safetensors)
    and the run's method config (k, gamma, ...)."""
    from safetensors.torch import load_file

    path = Path(path)
    weights = path if path.is_file() else path / "model.safetensors"
    if not weights.is_file():
        steps = sorted((path / "checkpoints").glob("step-*/model.safetensors"))
        if not steps:
            raise FileNotFoundError(f"{path}: no model.safetensors (pass the folder of a rerank_net run)")
        weights = steps[-1]
    info = next((p / "model_info.json" for p in (weights.parent, weights.parent.parent.parent)
                 if (p / "model_info.json").is_file()), None)
    if info is None:
        raise FileNotFoundError(f"{weights}: no model_info.json beside it or in its run folder")
    saved = json.loads(info.read_text())
    method, data = saved["method"], saved["data"]
    if method.get("name") != "rerank_net":
        raise ValueError(f"{path}: a '{method.get('name')}' model, not a rerank_net one; pass a run of "
                         "configs/rerank_net/*.yaml")
    fields = {f.name for f in dataclasses.fields(ContextualNetConfig)} - {"in_dim"}
    net = ContextualRerankNet(ContextualNetConfig(in_dim=data["feature_dim"],
                                                  **{k: v for k, v in method.items() if k in fields}))
    state = {k[len("net."):]: v for k, v in load_file(str(weights)).items() if k.startswith("net.")}
    net.load_state_dict(state)
    return net.eval(), method


class ContextualDistances(FeatureDistances):
    """Distances between refined queries and refined gallery (a DistanceSource).

    `model`: a rerank_net run folder, or the network itself (or any module with a `.net`). Neighbours are
    searched in the gallery (`search="gallery"`; a gallery item leaves itself out) or in Q + G
    (`search="all"`, the k-reciprocal convention). `k` and `gamma` default to the run's own;
    `lambda_value` mixes in the original distance: (1 - lambda) d_refined + lambda d_original.
    """

    def __init__(self, qf: Any, gf: Any, metric: str = "euclidean", model: Any = None, k: int | None = None,
                 gamma: float | None = None, lambda_value: float = 0.0, search: str = "gallery",
                 chunk_size: int = 1024) -> None:
        q, g = prepare_on_device(qf, gf, "cosine")   # defined on normalised features
        if model is None:
            raise ValueError("re-ranker 'contextual' needs a model: --rerank-model RUN or "
                             "eval.rerank_options: {model: RUN}")
        # a run folder, or in memory: a rerank_net method (its .net and .cfg) or the network itself
        net, saved = load_contextual_net(model) if isinstance(model, (str, Path)) else (
            getattr(model, "net", model), dataclasses.asdict(model.cfg) if hasattr(model, "net") else {})
        predictor = network_predictor(net.to(q.device).eval())
        k = min(k or saved.get("k") or net.cfg.k, len(g) - (1 if search == "gallery" else 0))
        gamma = gamma if gamma is not None else saved.get("gamma", 1.0)
        if search == "gallery":
            _, gi = nearest_neighbours(g, g, k, offset=0)
            _, qi = nearest_neighbours(q, g, k)
            base = g
        elif search == "all":
            base = torch.cat([q, g])
            _, qi = nearest_neighbours(q, base, k, offset=0)
            _, gi = nearest_neighbours(g, base, k, offset=len(q))
        else:
            raise ValueError(f"search must be 'gallery' or 'all', not {search!r}")
        self.refined_query = refine(q, base, qi, predictor, gamma, chunk_size)
        self.refined_gallery = refine(g, base, gi, predictor, gamma, chunk_size)
        super().__init__(self.refined_query, self.refined_gallery, metric)
        self.lambda_value = lambda_value
        self.original = FeatureDistances(q, g, metric) if lambda_value > 0 else None

    def block(self, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        d = super().block(start, stop, out)
        if self.original is None:
            return d
        return d.mul_(1.0 - self.lambda_value).add_(self.original.block(start, stop), alpha=self.lambda_value)
