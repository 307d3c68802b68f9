"""The distance registry: weighted_parts against a hand computation, chunked = unchunked, re-ranking and errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vreid.eval import evaluate
from vreid.eval.distance import DISTANCES, FeatureDistances
from vreid.eval.errors import EvaluationError
from vreid.eval.part_distance import pack_parts
from vreid.rerank import k_reciprocal
from vreid.rerank.registry import RerankError, build_reranker


def packed(n: int, k: int = 3, d: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return pack_parts(torch.randn(n, k, d, generator=g), torch.rand(n, k, generator=g) + 0.05)


def by_hand(q: torch.Tensor, g: torch.Tensor) -> np.ndarray:
    """MUSP's test(): per part squared distance of normalised features, weights w_q w_g L1-normalised per pair."""
    k = int(q[0, 0])
    out = np.zeros((len(q), len(g)))
    for i, a in enumerate(q.double().numpy()):
        for j, b in enumerate(g.double().numpy()):
            wa, wb = a[1:1 + k], b[1:1 + k]
            fa, fb = a[1 + k:].reshape(k, -1), b[1 + k:].reshape(k, -1)
            fa = fa / np.linalg.norm(fa, axis=1, keepdims=True)
            fb = fb / np.linalg.norm(fb, axis=1, keepdims=True)
            w = wa * wb / (wa * wb).sum()
            out[i, j] = (w * ((fa - fb) ** 2).sum(1)).sum()
    return out


def test_registry_names_the_distances():
    assert {"euclidean", "cosine", "weighted_parts"} <= set(DISTANCES.names())
    assert DISTANCES.get("euclidean").vector and not DISTANCES.get("weighted_parts").vector


def test_weighted_parts_equals_a_hand_computation():
    # two parts of two dims: the numbers can be checked on paper
    q = pack_parts(torch.tensor([[[1.0, 0.0], [0.0, 2.0]]]), torch.tensor([[0.75, 0.25]]))
    g = pack_parts(torch.tensor([[[0.0, 3.0], [0.0, 1.0]]]), torch.tensor([[0.5, 0.5]]))
    # part 1: |(1,0) - (0,1)|^2 = 2, part 2: |(0,1) - (0,1)|^2 = 0; weights 0.375, 0.125 -> 0.75, 0.25
    assert FeatureDistances(q, g, "weighted_parts").block(0, 1).item() == pytest.approx(1.5, abs=1e-6)
    q, g = packed(7, seed=1), packed(9, seed=2)
    np.testing.assert_allclose(FeatureDistances(q, g, "weighted_parts").block(0, 7).numpy(), by_hand(q, g),
                               atol=1e-5)
    # pairs (used by k-reciprocal for pairs outside the kNN lists) agree with blocks
    dist = DISTANCES.get("weighted_parts")
    pq, pg = dist.prepare(q), dist.prepare(g)
    np.testing.assert_allclose(dist.pairs(pq[[0, 3]], pg[[5, 1]]).numpy(), by_hand(q, g)[[0, 3], [5, 1]], atol=1e-5)


def test_chunked_evaluation_equals_unchunked_with_weighted_parts():
    q, g = packed(23, seed=3), packed(41, seed=4)
    rng = np.random.default_rng(0)
    q_ids, g_ids = rng.integers(0, 6, 23), rng.integers(0, 6, 41)
    q_cams, g_cams = rng.integers(0, 3, 23), rng.integers(0, 3, 41)
    whole = evaluate(q, g, q_ids, g_ids, q_cams, g_cams, metric="weighted_parts", chunk_size=23, top_k=5)
    for chunk in (1, 4, 7):
        part = evaluate(q, g, q_ids, g_ids, q_cams, g_cams, metric="weighted_parts", chunk_size=chunk, top_k=5)
        assert part.mAP == pytest.approx(whole.mAP, abs=1e-7) and part.mINP == pytest.approx(whole.mINP, abs=1e-7)
        np.testing.assert_allclose(part.cmc, whole.cmc)
        np.testing.assert_array_equal(part.ranked_indices, whole.ranked_indices)
    # and the metrics follow the hand-computed matrix, not a Euclidean one over the packed rows
    from vreid.eval import evaluate_distmat

    hand = evaluate_distmat(by_hand(q, g).astype(np.float32), q_ids, g_ids, q_cams, g_cams)
    assert whole.mAP == pytest.approx(hand.mAP, abs=1e-6)
    plain = evaluate(q, g, q_ids, g_ids, q_cams, g_cams, metric="euclidean")
    assert plain.mAP != pytest.approx(whole.mAP, abs=1e-6)


def test_kreciprocal_reranks_by_the_registered_distance():
    """k-reciprocal over weighted_parts = the dense reference routine fed the weighted_parts matrices (it squares
    its inputs, and weighted_parts is already a sum of squared distances: it gets their square roots)."""
    from vreid.rerank.dense_reference import dense_re_ranking

    q, g = packed(9, seed=5), packed(14, seed=6)
    dense = dense_re_ranking(np.sqrt(by_hand(q, g)), np.sqrt(by_hand(q, q)), np.sqrt(by_hand(g, g)), k1=5, k2=3,
                             lambda_value=0.3)
    ours = k_reciprocal(q, g, k1=5, k2=3, metric="weighted_parts")
    np.testing.assert_allclose(ours, dense, atol=1e-4)
    # the evaluator's path: no kept query x gallery matrix, the original term from the distance's blocks
    source = build_reranker("kreciprocal", q, g, "weighted_parts", k1=5, k2=3)
    np.testing.assert_allclose(torch.cat([source.block(0, 4), source.block(4, 9)]).numpy(), dense, atol=1e-4)
    plain = k_reciprocal(q, g, k1=5, k2=3, metric="euclidean")
    assert not np.allclose(plain, dense, atol=1e-3)


def test_vector_only_rerankers_refuse_weighted_parts():
    q, g = packed(4), packed(6)
    with pytest.raises(RerankError, match="kreciprocal"):
        build_reranker("aqe", q, g, "weighted_parts")
    with pytest.raises(ValueError, match="knn_backend=torch"):
        build_reranker("kreciprocal", q, g, "weighted_parts", k1=3, k2=2, knn_backend="faiss")


def test_plain_rows_are_refused_by_weighted_parts():
    with pytest.raises(EvaluationError, match="part count"):
        FeatureDistances(torch.randn(3, 9), torch.randn(4, 9), "weighted_parts")


def test_folder_store_searches_weighted_parts_exactly_in_blocks(tmp_path):
    from vreid.gallery.base import GalleryItem, StoreInfo
    from vreid.gallery.search import search_store
    from vreid.gallery.store import StoreError, check_embedder, create_store

    g, q = packed(30, seed=7), packed(3, seed=8)
    info = StoreInfo(dim=g.shape[1], metric="weighted_parts", model={"run": "r"})
    items = [GalleryItem(f"g{i}.jpg", camera=i % 3) for i in range(30)]
    with create_store(str(tmp_path / "store"), info) as store:
        ids = store.add(g.numpy(), items)
        expected = FeatureDistances(q, g, "weighted_parts").block(0, 3)
        for block_rows in (7, 1000):   # blocks of the stored rows merge to the whole-gallery answer
            found, dist = store._search_by_distance(q.numpy(), np.asarray(ids), 5, block_rows=block_rows)
            order = torch.sort(expected, dim=1, stable=True)
            np.testing.assert_array_equal(found, np.asarray(ids)[order.indices[:, :5].numpy()])
            np.testing.assert_allclose(dist, order.values[:, :5].numpy(), atol=1e-6)
        hits = store.search(q.numpy(), 4, cameras=[1])
        assert all(h.item.camera == 1 for row in hits for h in row) and all(len(row) == 4 for row in hits)
        reranked = search_store(store, q.numpy(), 3, rerank="kreciprocal")
        assert [len(r) for r in reranked] == [3, 3, 3]
        with pytest.raises(RerankError, match="weighted_parts"):
            search_store(store, q.numpy(), 3, rerank="aqe")
        with pytest.raises(StoreError, match="built for 'weighted_parts'"):
            check_embedder(store.info, g.shape[1], "cosine", "--checkpoint run", "use the model it was built with")


def test_weighted_parts_blocks_taller_than_its_denominator_strip():
    """Blocks of more query rows than SHARED_ROWS (the denominator strip) give the same distances."""
    from vreid.eval.part_distance import SHARED_ROWS

    q, g = packed(SHARED_ROWS * 2 + 5, k=2, d=3, seed=9), packed(11, k=2, d=3, seed=10)
    source = FeatureDistances(q, g, "weighted_parts")
    np.testing.assert_allclose(source.block(0, len(q)).numpy(), by_hand(q, g), atol=1e-5)
    out = torch.empty(len(q), len(g))
    assert source.block(0, len(q), out=out).data_ptr() == out.data_ptr()   # the caller's buffer is the answer
