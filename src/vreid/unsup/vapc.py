"""Viewpoint-aware progressive clustering (VAPC, Zheng et al., T-ITS; reconstruction, see docs/methods/vapc.md):
cluster inside each predicted-viewpoint subset first (sparse Jaccard + DBSCAN, `vreid.unsup.clustering`), then
merge clusters of different viewpoints when their centroids are mutual nearest neighbours closer than tau_t.

Pure functions on features and viewpoint bins: nothing here trains or reads images. Memory: the intra-view step
is the O(kN) graph of each subset; the merging compares cluster centroids in row blocks (C centroids, a block
of b rows holds b x C similarities), never N x N nor a whole C x C matrix.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from vreid.config.loader import FieldError
from vreid.unsup.clustering import ClusteringConfig, NeighbourGraph

#: similarities one merging block may hold (rows x centroids), 16M floats = 64 MB
MERGE_BLOCK_BUDGET = 1 << 24


@dataclass
class MergeSchedule:
    """tau_t = tau_0 + (tau_max - tau_0) * min(1, t / T_p), t = epoch - 1 (epoch 1 uses tau_0); cosine distance.
    `centre_views`: compare centroids after removing each viewpoint subset's mean (`centre_per_view`)."""

    tau_0: float = 0.5
    tau_max: float = 0.7
    epochs: int = 20          # T_p
    centre_views: bool = True

    def __call__(self, epoch: int) -> float:
        if epoch < 1:
            raise ValueError(f"merge schedule epochs start at 1, got {epoch}")
        return self.tau_0 + (self.tau_max - self.tau_0) * min(1.0, (epoch - 1) / self.epochs)

    def validate(self) -> None:
        if not 0 <= self.tau_0 <= self.tau_max <= 2:
            raise FieldError("tau_0", f"need 0 <= tau_0 <= tau_max <= 2 (cosine distance), got "
                                      f"{self.tau_0}, {self.tau_max}")
        if self.epochs < 1:
            raise FieldError("epochs", f"T_p must be >= 1, got {self.epochs}")


@dataclass
class ViewClusters:
    """Intra-view clusters: a label per image (-1 outlier) and the viewpoint bin of each cluster."""

    labels: np.ndarray
    cluster_views: np.ndarray


@dataclass
class ProgressiveLabels:
    """The result of one VAPC clustering step."""

    labels: np.ndarray              # merged pseudo-label per image, 0..G-1, -1 = left out
    intra_clusters: int             # clusters found inside the viewpoint subsets
    merges: int                     # cross-view merges done (intra_clusters - merges = final clusters)
    rounds: int                     # merging rounds until none was left
    tau: float
    per_view: dict[int, int] = field(default_factory=dict)   # bin -> intra-view clusters


@dataclass(frozen=True)
class ViewGraphs:
    """One `NeighbourGraph` per viewpoint subset (bin, its rows, its graph), built once and clustered at any eps.
    Images with view -1 (no or too uncertain a prediction) belong to none. A subset too small for a kNN graph of
    k neighbours gets k = size - 1; one under min_samples images (or 2) gets no graph and no clusters."""

    num_images: int
    parts: list[tuple[int, np.ndarray, NeighbourGraph]]

    @classmethod
    def build(cls, features: torch.Tensor, views: np.ndarray, cfg: ClusteringConfig | None = None) -> ViewGraphs:
        cfg = cfg or ClusteringConfig()
        views = np.asarray(views, np.int64)
        parts = []
        for v in np.unique(views[views >= 0]):
            rows = np.flatnonzero(views == v)
            if len(rows) < max(cfg.min_samples, 2):
                continue
            sub_cfg = dataclasses.replace(cfg, k=min(cfg.k, len(rows) - 1),
                                          min_samples=min(cfg.min_samples, len(rows) - 1))
            parts.append((int(v), rows, NeighbourGraph.build(features[torch.from_numpy(rows)], sub_cfg)))
        return cls(len(views), parts)

    def cluster(self, eps: float) -> ViewClusters:
        """Clusters inside each subset at `eps`; labels made global (clusters of bin order, then their own order)."""
        labels = np.full(self.num_images, -1, np.int64)
        cluster_views: list[int] = []
        for v, rows, graph in self.parts:
            sub = graph.cluster(eps)
            found = int(sub.max()) + 1 if (sub >= 0).any() else 0
            labels[rows[sub >= 0]] = sub[sub >= 0] + len(cluster_views)
            cluster_views += [v] * found
        return ViewClusters(labels, np.asarray(cluster_views, np.int64))


def _nearest_cross_view(centroids: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For every group: the most similar group whose viewpoint set is disjoint from its own (index, cosine
    similarity; -1 and -inf where there is none), in row blocks of MERGE_BLOCK_BUDGET similarities."""
    n = centroids.shape[0]
    best = torch.full((n,), -1, dtype=torch.long)
    sim_best = torch.full((n,), float("-inf"))
    block = max(1, MERGE_BLOCK_BUDGET // max(n, 1))
    for s in range(0, n, block):
        e = min(n, s + block)
        sim = centroids[s:e] @ centroids.T
        sim.masked_fill_((masks[s:e, None] & masks[None, :]) != 0, float("-inf"))   # shared view (or itself)
        val, idx = sim.max(1)
        ok = torch.isfinite(val)
        best[s:e] = torch.where(ok, idx, torch.full_like(idx, -1))
        sim_best[s:e] = val
    return best, sim_best


def merge_cross_view(features: torch.Tensor, clusters: ViewClusters, tau: float, max_rounds: int = 64
                     ) -> tuple[np.ndarray, int, int]:
    """Merge intra-view clusters across viewpoints; returns (group per cluster 0..G-1, merges, rounds).

    A group is a set of clusters; its centroid is the normalised mean of its members' features and its viewpoint
    set the union of theirs. Each round, two groups whose viewpoint sets are disjoint merge when each is the
    other's nearest such group and their cosine distance is below `tau`; rounds repeat until none merges (or
    `max_rounds`). Disjoint sets keep two clusters of one viewpoint apart: the intra-view step separated them.
    """
    c = len(clusters.cluster_views)
    group = np.arange(c)
    if c == 0:
        return group, 0, 0
    x = F.normalize(torch.as_tensor(features).float(), dim=1)
    inl = torch.from_numpy(clusters.labels >= 0)
    sums = torch.zeros(c, x.shape[1]).index_add_(0, torch.from_numpy(clusters.labels)[inl], x[inl])
    masks = torch.from_numpy(np.left_shift(1, clusters.cluster_views)).long()   # viewpoint set as a bit mask
    merges, rounds = 0, 0
    alive = np.arange(c)                     # the representative cluster of each live group
    while rounds < max_rounds:
        nn_idx, nn_sim = _nearest_cross_view(F.normalize(sums[alive], dim=1), masks[alive])
        a = torch.arange(len(alive))
        back = nn_idx.clamp(min=0)[nn_idx.clamp(min=0)]
        mutual = (nn_idx >= 0) & (back == a) & (a < nn_idx) & ((1 - nn_sim) < tau)
        pairs = torch.nonzero(mutual).flatten()
        if len(pairs) == 0:
            break
        rounds += 1
        keep, drop = alive[pairs.numpy()], alive[nn_idx[pairs].numpy()]
        sums[keep] += sums[drop]
        masks[keep] |= masks[drop]
        group[drop] = keep
        merges += len(pairs)
        alive = np.setdiff1d(alive, drop)
    while (group[group] != group).any():     # follow merge chains to each group's representative
        group = group[group]
    _, renumbered = np.unique(group, return_inverse=True)   # representatives in ascending order: 0..G-1
    return renumbered.astype(np.int64), merges, rounds


def centre_per_view(features: torch.Tensor, views: np.ndarray) -> torch.Tensor:
    """Each viewpoint subset's mean feature subtracted from its rows, then L2-normalised: what all vehicles seen
    from one side share (the viewpoint) no longer counts in cross-view similarities. Rows of view -1 unchanged."""
    x = F.normalize(torch.as_tensor(features).float(), dim=1).clone()
    views = np.asarray(views)
    for v in np.unique(views[views >= 0]):
        rows = torch.from_numpy(np.flatnonzero(views == v))
        x[rows] -= x[rows].mean(0, keepdim=True)
    return F.normalize(x, dim=1)


def progressive_labels(features: torch.Tensor, views: np.ndarray, eps: float, tau: float,
                       cfg: ClusteringConfig | None = None, centre_views: bool = True,
                       graphs: ViewGraphs | None = None) -> ProgressiveLabels:
    """One VAPC step: intra-view clustering, then cross-view merging at threshold `tau` (on per-view centred
    features with `centre_views`, see `centre_per_view`). `graphs`: the subsets' graphs of these features and
    views, built beforehand (`ViewGraphs.build`) when several eps are tried."""
    vc = (graphs or ViewGraphs.build(features, views, cfg)).cluster(eps)
    merge_space = centre_per_view(features, views) if centre_views else features
    group, merges, rounds = merge_cross_view(merge_space, vc, tau)
    labels = np.where(vc.labels >= 0, group[np.maximum(vc.labels, 0)] if len(group) else -1, -1)
    per_view = {int(v): int(n) for v, n in zip(*np.unique(vc.cluster_views, return_counts=True))}
    return ProgressiveLabels(labels=labels.astype(np.int64), intra_clusters=len(vc.cluster_views), merges=merges,
                             rounds=rounds, tau=float(tau), per_view=per_view)
