"""Sparse re-rankers against dense/brute-force versions written here from the papers' definitions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vreid.eval import evaluate
from vreid.rerank import RERANKERS, expand_queries, k_reciprocal, knn, sparse_rerank_graph
from vreid.rerank.dense_reference import dense_re_ranking, euclidean
from vreid.rerank.query_expansion import fastreid_aqe


def clustered(n_q, n_g, dim=24, n_ids=40, noise=0.8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, dim))
    ids = rng.integers(0, n_ids, n_q + n_g)
    x = (centres[ids] + noise * rng.normal(size=(n_q + n_g, dim))).astype(np.float32)
    cams = rng.integers(0, 5, n_q + n_g)
    return x[:n_q], x[n_q:], ids[:n_q], ids[n_q:], cams[:n_q], cams[n_q:]


@pytest.mark.parametrize("k1,k2,lam", [(20, 6, 0.3), (7, 1, 0.5), (5, 3, 0.0)])
def test_k_reciprocal_equals_dense_reference(k1, k2, lam):
    qf, gf, *_ = clustered(90, 410, seed=k1)
    ref = dense_re_ranking(euclidean(qf, gf), euclidean(qf, qf), euclidean(gf, gf), k1, k2, lam)
    out = k_reciprocal(qf, gf, k1=k1, k2=k2, lambda_value=lam, chunk_size=32)
    assert out.dtype == np.float32 and out.shape == (90, 410)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)


def test_k_reciprocal_faiss_backend_and_tensors():
    qf, gf, *_ = clustered(50, 250, seed=3)
    a = k_reciprocal(torch.from_numpy(qf), torch.from_numpy(gf))
    b = k_reciprocal(qf, gf, knn_backend="faiss")
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_knn_backends_agree():
    x = torch.from_numpy(clustered(0, 300, seed=4)[1])
    d1, i1, m1 = knn(x, 8, "torch")
    d2, i2, m2 = knn(x, 8, "faiss")
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(d1, d2, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(m1, m2, rtol=1e-4)
    assert (i1[:, 0] == np.arange(300)).all()


def brute_force_graph(x, k):
    """The O(kn) paper's re-ranking, pair by pair, with Python sets."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = np.sqrt(np.maximum(((x[:, None] - x[None]) ** 2).sum(-1), 0))
    nbrs = np.argsort(d, axis=1, kind="stable")[:, :k]
    v = [{int(c): np.exp(-d[i, c]) for c in nbrs[i]} for i in range(len(x))]
    out = {}
    for i in range(len(x)):
        for j in nbrs[i]:
            j = int(j)
            if j == i:
                out[i, j] = 0.0
            elif i in v[j]:
                keys = set(v[i]) | set(v[j])
                num = sum(min(v[i].get(c, 0), v[j].get(c, 0)) for c in keys)
                den = sum(max(v[i].get(c, 0), v[j].get(c, 0)) for c in keys)
                out[i, j] = 1 - num / den
            else:
                out[i, j] = 1.0
    return out


def test_sparse_graph_matches_brute_force():
    x = clustered(0, 150, dim=8, noise=1.0, seed=5)[1]
    r, idx = sparse_rerank_graph(x, k=10)
    expected = brute_force_graph(x.astype(np.float64), 10)
    assert r.shape == idx.shape == (150, 10)
    assert (np.diff(r, axis=1) >= 0).all()
    for i in range(150):
        for m in range(10):
            assert r[i, m] == pytest.approx(expected[i, int(idx[i, m])], abs=1e-5)
    assert set(np.unique(r[r >= 1 - 1e-7])) <= {1.0}


def test_query_expansion():
    qf, gf, *_ = clustered(20, 100, seed=6)
    q, g = expand_queries(qf, gf, k=3)
    gn = gf / np.linalg.norm(gf, axis=1, keepdims=True)
    qn = qf / np.linalg.norm(qf, axis=1, keepdims=True)
    top = np.argsort(-(qn @ gn.T), axis=1)[:, :3]
    manual = qn + gn[top].sum(1)
    manual /= np.linalg.norm(manual, axis=1, keepdims=True)
    np.testing.assert_allclose(q.numpy(), manual, atol=1e-5)
    np.testing.assert_allclose(g.numpy(), gn, atol=1e-6)


def fastreid_aqe_dense(qf, gf, qe_times, qe_k, alpha):
    """FastReID's aqe (fastreid/evaluation/query_expansion.py) as written there, in float64 with the full
    similarity matrix; its argpartition picks any member of a tie, so a stable sort stands in for it."""
    all_feat = np.concatenate([qf, gf]).astype(np.float64)
    norm_feat = all_feat / np.linalg.norm(all_feat, axis=1, keepdims=True)
    for _ in range(qe_times):
        sims = norm_feat @ norm_feat.T
        init_rank = np.argsort(-sims, axis=1, kind="stable")[:, :qe_k]
        weights = np.power(np.take_along_axis(sims, init_rank, 1), alpha)[:, :, None]
        all_feat = np.mean(all_feat[init_rank] * weights, axis=1)
        norm_feat = all_feat / np.linalg.norm(all_feat, axis=1, keepdims=True)
    return all_feat[: len(qf)], all_feat[len(qf):]


@pytest.mark.parametrize("qe_times", [1, 2])
@pytest.mark.parametrize("qe_k,alpha,backend,options", [
    (10, 3.0, "torch", {}),
    (4, 1.0, "torch", {"chunk_size": 37, "block_width": 64}),   # kNN blocks straddle the query/gallery boundary
    (10, 3.0, "faiss", {"index": "flat"}),
])
def test_fastreid_aqe_equals_dense_definition(qe_times, qe_k, alpha, backend, options):
    qf, gf, *_ = clustered(45, 180, seed=11)
    qf = qf * np.linspace(0.5, 2.0, 45, dtype=np.float32)[:, None]   # raw, not unit: FastReID averages these
    ref_q, ref_g = fastreid_aqe_dense(qf, gf, qe_times, qe_k, alpha)
    q, g = fastreid_aqe(qf, gf, qe_times, qe_k, alpha, knn_backend=backend, knn_options=options)
    np.testing.assert_allclose(q.numpy(), ref_q, atol=1e-5, rtol=0)
    np.testing.assert_allclose(g.numpy(), ref_g, atol=1e-5, rtol=0)   # the gallery is expanded too
    src = RERANKERS.get("fastreid_aqe")(qf, gf, metric="cosine", qe_times=qe_times, qe_k=qe_k, alpha=alpha,
                                        knn_backend=backend, knn_options=options)
    unit_q, unit_g = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (ref_q, ref_g))
    np.testing.assert_allclose(src.block(3, 40).numpy(), 1 - unit_q[3:40] @ unit_g.T, atol=1e-5, rtol=0)
    src = RERANKERS.get("fastreid_aqe")(qf, gf, metric="euclidean", qe_times=qe_times, qe_k=qe_k, alpha=alpha)
    ref_sq = ((ref_q[:, None] - ref_g[None]) ** 2).sum(-1)
    # |a|^2 + |b|^2 - 2 a.b in float32: on values near 30 it cancels to about 1e-5 absolute
    np.testing.assert_allclose(src.block(0, 45).numpy(), ref_sq, rtol=1e-5, atol=1e-4)


def test_rerankers_registered_and_help():
    assert {"kreciprocal", "sparse", "aqe", "alpha_qe", "fastreid_aqe"} <= set(RERANKERS.names())
    qf, gf, q_ids, g_ids, q_cams, g_cams = clustered(60, 300, noise=1.3, seed=7)
    base = evaluate(qf, gf, q_ids, g_ids, q_cams, g_cams)
    for name in ("kreciprocal", "sparse", "aqe", "alpha_qe", "fastreid_aqe"):
        res = evaluate(qf, gf, q_ids, g_ids, q_cams, g_cams, rerank=name, chunk_size=16)
        assert res.rerank == name and res.mAP > base.mAP


def test_kreciprocal_evaluation_equals_matrix():
    qf, gf, q_ids, g_ids, q_cams, g_cams = clustered(40, 200, seed=8)
    from vreid.eval import evaluate_distmat

    a = evaluate(qf, gf, q_ids, g_ids, q_cams, g_cams, rerank="kreciprocal", chunk_size=9)
    b = evaluate_distmat(k_reciprocal(qf, gf), q_ids, g_ids, q_cams, g_cams)
    assert a.mAP == pytest.approx(b.mAP, abs=1e-6) and np.allclose(a.cmc, b.cmc)


@pytest.mark.parametrize("chunk_size,block_width", [(37, 64), (50, 50), (2048, 8192)])
def test_knn_torch_symmetric_blocks_equal_brute_force(chunk_size, block_width):
    x = torch.from_numpy(clustered(0, 301, dim=16, seed=9)[1])
    dist, idx, row_max = knn(x, 12, "torch", chunk_size=chunk_size, block_width=block_width)
    d64 = torch.cdist(x.double(), x.double()).pow(2).numpy()
    np.testing.assert_array_equal(idx, np.argsort(d64, axis=1, kind="stable")[:, :12])
    np.testing.assert_allclose(dist, np.take_along_axis(d64, idx, 1), atol=1e-4)
    np.testing.assert_allclose(row_max, d64.max(1), rtol=1e-5)
    assert (np.diff(dist, axis=1) >= 0).all()


def test_k_reciprocal_small_knn_blocks_keep_query_gallery_distances():
    # blocks that straddle the query/gallery boundary: the kNN pass hands its query x gallery part to the output
    qf, gf, *_ = clustered(70, 230, seed=10)
    ref = dense_re_ranking(euclidean(qf, gf), euclidean(qf, qf), euclidean(gf, gf))
    out = k_reciprocal(qf, gf, chunk_size=16, knn_options={"chunk_size": 45, "block_width": 100})
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)
    src = RERANKERS.get("kreciprocal")(qf, gf, knn_options={"chunk_size": 45, "block_width": 100})
    np.testing.assert_allclose(src.block(5, 30).numpy(), ref[5:30], atol=1e-5, rtol=0)
