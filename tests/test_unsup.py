"""vreid.unsup: sparse re-ranking vs a dense computation, sparse DBSCAN vs scikit-learn, eps schedules,
derangements, neighbourhood sampling, cluster statistics, losses and ensemble distances."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.sparse import csr_matrix
from scipy.stats import chisquare

from vreid.rerank import sparse_rerank_graph
from vreid.unsup import (EPS_SCHEDULES, ClusterMemory, ClusteringConfig, EnsembleDistances, EpsSchedule,
                         cluster_features, cluster_stats, disjoint_partitions, drop_small_clusters,
                         neighbourhood_sample, proxy_loss, random_derangement, softmax_triplet_loss, sparse_dbscan,
                         split_embedding)


def clustered(n=240, ids=30, dim=16, spread=3.0, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(ids, dim, generator=g) * spread
    return torch.randn(n, dim, generator=g) + centres[torch.arange(n) % ids]


def dense_mutual_jaccard(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """N x N weighted Jaccard of exp(-d) vectors over each kNN list, 1 for non-mutual pairs; and the lists."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = np.sqrt(np.maximum(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1), 0))
    n = len(x)
    lists = np.argsort(d, axis=1, kind="stable")[:, :k]
    v = np.zeros((n, n))
    for i in range(n):
        v[i, lists[i]] = np.exp(-d[i, lists[i]])
    member = v > 0
    jac = np.ones((n, n))
    for i in range(n):
        for j in range(n):
            if member[i, j] and member[j, i]:
                jac[i, j] = 1 - np.minimum(v[i], v[j]).sum() / np.maximum(v[i], v[j]).sum()
    np.fill_diagonal(jac, 0.0)
    return jac, lists


@pytest.mark.parametrize("k", [5, 12])
def test_sparse_rerank_equals_dense_mutual_jaccard(k):
    x = clustered(n=80, ids=10, dim=8, seed=k).numpy().astype(np.float64)
    dense, lists = dense_mutual_jaccard(x, k)
    r, idx = sparse_rerank_graph(torch.from_numpy(x).float(), k=k, knn_backend="torch")
    assert r.shape == idx.shape == (80, k)
    for i in range(80):
        assert set(idx[i]) == set(lists[i])
        np.testing.assert_allclose(r[i], dense[i, idx[i]], atol=2e-5)
        assert np.all(np.diff(r[i]) >= 0)


def precomputed_graph(r: np.ndarray, idx: np.ndarray) -> csr_matrix:
    n, k = idx.shape
    return csr_matrix((r.ravel().astype(np.float64), (np.repeat(np.arange(n), k), idx.ravel())), shape=(n, n))


@pytest.mark.parametrize("eps", [0.3, 0.45, 0.6, 0.75])
def test_sparse_dbscan_equals_sklearn_precomputed(eps):
    from sklearn.cluster import DBSCAN

    r, idx = sparse_rerank_graph(clustered(n=300, ids=40, dim=12, spread=1.5), k=15, knn_backend="torch")
    ours = sparse_dbscan(r, idx, eps, min_samples=4)
    ref = DBSCAN(eps=eps, min_samples=4, metric="precomputed").fit(precomputed_graph(r, idx)).labels_
    np.testing.assert_array_equal(ours, ref)
    if eps == 0.6:   # a non-trivial case: many clusters, border points and noise
        assert ours.max() >= 10 and 0 < (ours == -1).sum() < 150


def test_sparse_dbscan_on_a_plain_knn_graph_matches_sklearn():
    from sklearn.cluster import DBSCAN
    from sklearn.neighbors import NearestNeighbors

    x = clustered(n=200, ids=20, dim=4, spread=2.0, seed=3).numpy()
    graph = NearestNeighbors(n_neighbors=10).fit(x).kneighbors_graph(mode="distance")   # symmetric enough?
    graph = graph.maximum(graph.T).tocsr()                                               # make it symmetric
    n = graph.shape[0]
    width = np.diff(graph.indptr).max()
    r, idx = np.full((n, width), np.inf), np.full((n, width), -1)
    for i in range(n):
        cols = graph.indices[graph.indptr[i]:graph.indptr[i + 1]]
        r[i, :len(cols)], idx[i, :len(cols)] = graph.data[graph.indptr[i]:graph.indptr[i + 1]], cols
    for eps in (0.8, 1.2, 1.6):
        ref = DBSCAN(eps=eps, min_samples=4, metric="precomputed").fit(graph).labels_
        np.testing.assert_array_equal(sparse_dbscan(r, idx, eps, 4), ref)


def test_drop_small_clusters_renumbers():
    np.testing.assert_array_equal(drop_small_clusters(np.array([0, 0, 1, 2, 2, 2, -1, 1, 2]), 3),
                                  [-1, -1, -1, 0, 0, 0, -1, -1, 0])


def test_cluster_features_finds_well_separated_identities():
    x = clustered(n=240, ids=30, dim=16, spread=4.0)
    labels = cluster_features(x, 0.6, ClusteringConfig(k=12, knn_backend="torch"))
    stats = cluster_stats(labels, np.arange(240) % 30)
    assert stats.purity > 0.95 and 20 <= stats.clusters <= 34 and stats.true_ids == 30
    ivf = cluster_features(x, 0.6, ClusteringConfig(k=12, knn_backend="faiss", knn_options={"index": "flat"}))
    assert cluster_stats(ivf, np.arange(240) % 30).purity > 0.95


def test_cluster_stats_purity_by_hand():
    s = cluster_stats(np.array([0, 0, 0, 1, 1, -1]), np.array([5, 5, 6, 7, 7, 9]))
    assert (s.images, s.clusters, s.outliers, s.true_ids) == (6, 2, 1, 4)
    assert s.purity == pytest.approx(4 / 5)


def test_proposed_schedule_hits_documented_values():
    sched = EpsSchedule(name="proposed", eps_min=0.4, eps_max=0.7)
    vals = [sched(t, 40) for t in range(1, 41)]
    assert vals[0] == pytest.approx(0.4018, abs=1e-4) and vals[1] == pytest.approx(0.407, abs=1e-3)
    assert vals[19] == pytest.approx(0.7) and max(vals) == pytest.approx(0.7)
    assert vals[29] == pytest.approx(0.55)
    assert all(v == pytest.approx(0.55) for v in vals[29:])
    assert all(a < b for a, b in zip(vals[:19], vals[1:20])) and all(a > b for a, b in zip(vals[19:29], vals[20:30]))


def test_other_schedules():
    assert EpsSchedule(name="fixed", eps=0.5)(7, 10) == 0.5
    full = EpsSchedule(name="cosine_full")
    assert full(20, 40) == pytest.approx(0.7) and full(40, 40) == pytest.approx(0.4)
    high = EpsSchedule(name="high_first")
    assert high(1, 40) == high(20, 40) == 0.7 and high(40, 40) == pytest.approx(0.55)
    assert EpsSchedule(name="rising")(1, 10) == pytest.approx(0.4) and EpsSchedule(name="rising")(10, 10) == \
        pytest.approx(0.7)
    assert EpsSchedule(name="falling")(1, 10) == pytest.approx(0.7)
    assert {"proposed", "fixed", "cosine_full", "high_first", "rising", "falling"} <= set(EPS_SCHEDULES.names())
    with pytest.raises(ValueError, match="unknown eps schedule"):
        EpsSchedule(name="nope").validate()


@pytest.mark.parametrize("b", [2, 3, 4])
def test_derangement_has_no_fixed_point_and_is_uniform(b):
    rng = np.random.default_rng(b)
    draws = [tuple(random_derangement(b, rng)) for _ in range(6000)]
    assert all(p[i] != i for p in draws for i in range(b))
    assert all(sorted(p) == list(range(b)) for p in draws)
    counts: dict[tuple, int] = {}
    for p in draws:
        counts[p] = counts.get(p, 0) + 1
    expected = round(math.factorial(b) * sum((-1) ** i / math.factorial(i) for i in range(b + 1)))
    assert len(counts) == expected                                  # every derangement occurs: 1, 2, 9
    if expected > 1:
        assert chisquare(list(counts.values())).pvalue > 1e-3


@pytest.mark.parametrize("p", [0.1, 0.33, 0.5, 1.0])
def test_neighbourhood_sample_size_and_anchor(p):
    x = clustered(n=97, ids=9)
    for anchor in (0, 13, 96):
        s = neighbourhood_sample(x, p, anchor)
        assert len(s) == math.ceil(p * 97) and len(set(s)) == len(s) and anchor in s and s[0] == anchor
    near = neighbourhood_sample(x, 0.1, 5)
    f = torch.nn.functional.normalize(x, dim=1)
    sims = (f @ f[5]).numpy()
    assert sims[near].min() >= np.delete(sims, near).max() - 1e-6


def test_disjoint_partitions_cover_everything_once():
    x = clustered(n=103, ids=9)
    parts = disjoint_partitions(x, 0.25, np.random.default_rng(0))
    allidx = np.concatenate(parts)
    assert sorted(allidx) == list(range(103))
    assert [len(p) for p in parts] == [26, 26, 26, 25]


def test_losses_and_memory():
    torch.manual_seed(0)
    f = torch.randn(8, 4, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    mem = ClusterMemory()
    mem.reset(f.detach(), y.numpy())
    assert mem.centroids.shape == (4, 4) and torch.allclose(mem.centroids.norm(dim=1), torch.ones(4))
    loss = proxy_loss(f, y, mem.centroids, 0.05) + softmax_triplet_loss(f, y, 0.05)
    loss.backward()
    assert torch.isfinite(loss) and f.grad.abs().sum() > 0
    sim = torch.nn.functional.normalize(f.detach(), dim=1)
    s = sim @ sim.T
    pos = torch.stack([s[0, [0, 1]].min(), s[1, [0, 1]].min()])
    neg = torch.stack([s[0, 2:].max(), s[1, 2:].max()])
    manual = -torch.log(torch.exp(pos / 0.05) / (torch.exp(pos / 0.05) + torch.exp(neg / 0.05)))
    assert torch.isfinite(manual).all()
    two = softmax_triplet_loss(f.detach()[:4], y[:4], 0.05)
    ref = []
    for i in range(4):
        same = y[:4] == y[i]
        ref.append(torch.nn.functional.softplus((s[i, :4][~same].max() - s[i, :4][same].min()) / 0.05))
    assert float(two) == pytest.approx(float(torch.stack(ref).mean()), rel=1e-5)


def test_ensemble_distances_average_the_backbones():
    q = [torch.nn.functional.normalize(torch.randn(5, 6), dim=1) for _ in range(2)]
    g = [torch.nn.functional.normalize(torch.randn(7, 6), dim=1) for _ in range(2)]
    ens = EnsembleDistances(q, g)
    expected = (torch.cdist(q[0], g[0]) + torch.cdist(q[1], g[1])) / 2
    assert torch.allclose(ens.block(0, 5), expected, atol=1e-5)
    assert torch.allclose(ens.block(2, 4), expected[2:4], atol=1e-5)
    joined = torch.cat([q[0], q[1]], 1) / math.sqrt(2)
    parts = split_embedding(joined, [6, 6])
    assert torch.allclose(parts[0] * math.sqrt(2), q[0])
