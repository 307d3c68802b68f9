"""Chunked positive-ranking metrics against a plain full-sort evaluator (ties, junk, queries without match)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vreid.eval import cgm_from_ranked_list, evaluate_distmat, evaluate_features
from vreid.eval.distance import FeatureDistances


def full_sort_reference(distmat, q_ids, g_ids, q_cams, g_cams, junk_rule, max_rank):
    """The usual evaluator: stable argsort of each full row, drop junk, read hits off the list."""
    aps, inps, cmcs = [], [], []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")
        if junk_rule == "same_id_same_camera":
            junk = (g_ids[order] == q_ids[i]) & (g_cams[order] == q_cams[i])
        elif junk_rule == "same_camera":
            junk = g_cams[order] == q_cams[i]
        else:
            junk = np.zeros(len(order), bool)
        matches = (g_ids[order][~junk] == q_ids[i]).astype(np.float64)
        if not matches.any():
            continue
        hits = np.cumsum(matches)
        aps.append(((hits / np.arange(1, len(matches) + 1)) * matches).sum() / matches.sum())
        last = np.nonzero(matches)[0][-1]
        inps.append(hits[last] / (last + 1))
        cmc = np.minimum(hits, 1)[:max_rank]
        cmcs.append(np.pad(cmc, (0, max_rank - len(cmc)), constant_values=1))
    return np.mean(aps), np.mean(inps), np.mean(cmcs, 0), len(aps)


def random_split(rng, n_q, n_g, n_ids, n_cams, dim, integer):
    q_ids, g_ids = rng.integers(0, n_ids, n_q), rng.integers(0, n_ids, n_g)
    q_ids[:3] = n_ids + 7  # queries with no gallery match at all
    q_cams, g_cams = rng.integers(0, n_cams, n_q), rng.integers(0, n_cams, n_g)
    if integer:  # few distinct values: many exact ties
        qf, gf = rng.integers(-1, 2, (n_q, dim)), rng.integers(-1, 2, (n_g, dim))
    else:
        qf, gf = rng.normal(size=(n_q, dim)), rng.normal(size=(n_g, dim))
    return qf.astype(np.float32), gf.astype(np.float32), q_ids, g_ids, q_cams, g_cams


@pytest.mark.parametrize("junk_rule", ["same_id_same_camera", "same_camera", "none"])
@pytest.mark.parametrize("integer", [True, False])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_matches_full_sort(junk_rule, integer, metric):
    rng = np.random.default_rng(hash((junk_rule, integer, metric)) % 2**32)
    qf, gf, q_ids, g_ids, q_cams, g_cams = random_split(rng, 57, 301, 25, 4, 5, integer)
    if integer and metric == "cosine":
        qf[qf.sum(1) == 0, 0] = 1  # no zero vectors
        gf[np.abs(gf).sum(1) == 0, 0] = 1
    # the same blocks as the evaluator: BLAS may round a product differently for other block shapes
    source = FeatureDistances(qf, gf, metric)
    dist = np.concatenate([source.block(s, min(s + 10, len(qf))).numpy() for s in range(0, len(qf), 10)])
    ref_map, ref_inp, ref_cmc, n_valid = full_sort_reference(dist, q_ids, g_ids, q_cams, g_cams, junk_rule, 50)
    res = evaluate_features(qf, gf, q_ids, g_ids, q_cams, g_cams, metric=metric, junk_rule=junk_rule,
                            chunk_size=10)
    assert res.num_valid_queries == n_valid and res.num_skipped_queries == 57 - n_valid >= 3
    assert res.mAP == pytest.approx(ref_map, abs=1e-6)
    assert res.mINP == pytest.approx(ref_inp, abs=1e-6)
    np.testing.assert_allclose(res.cmc, ref_cmc, atol=1e-6)
    if integer:
        assert len(np.unique(dist)) < dist.size / 10  # the test really has ties


def test_tensor_inputs_and_distmat_agree():
    rng = np.random.default_rng(1)
    qf, gf, q_ids, g_ids, q_cams, g_cams = random_split(rng, 40, 120, 10, 3, 8, False)
    a = evaluate_features(torch.from_numpy(qf), torch.from_numpy(gf), torch.from_numpy(q_ids), g_ids,
                          q_cams, torch.from_numpy(g_cams))
    dist = FeatureDistances(qf, gf).block(0, 40).numpy()
    b = evaluate_distmat(dist, q_ids, g_ids, q_cams, g_cams, chunk_size=7)
    assert a.mAP == pytest.approx(b.mAP, abs=1e-9) and np.allclose(a.cmc, b.cmc)
    d = a.to_dict()
    assert d["rank1"] == a.cmc[0] and d["junk_rule"] == "same_id_same_camera" and len(d["cmc"]) == 50


def test_all_ties_rank_by_gallery_index():
    # every gallery item at the same distance: positives at gallery indices 2 and 5 get ranks 2 and 5
    qf, gf = np.zeros((1, 4), np.float32), np.zeros((8, 4), np.float32)
    g_ids = np.array([0, 0, 1, 0, 0, 1, 0, 0])
    res = evaluate_features(qf, gf, [1], g_ids, junk_rule="none", max_rank=8)
    assert res.mAP == pytest.approx((1 / 3 + 2 / 6) / 2)
    assert res.mINP == pytest.approx(2 / 6)
    np.testing.assert_allclose(res.cmc, [0, 0, 1, 1, 1, 1, 1, 1])


def test_cgm_hand_worked_example():
    # query: id A on camera 1; ranked list A/c2, B/c3, A/c1, A/c3, C/c2, A/c2 (A=0, B=1, C=2)
    ids, cams = [0, 1, 0, 0, 2, 0], [2, 3, 1, 3, 2, 2]
    s_c2 = (1 / (1 + 0) + 1 / (1 + 2)) / 2
    s_c3 = 1 / (1 + 1)
    assert cgm_from_ranked_list(0, 1, ids, cams) == pytest.approx((s_c2 + s_c3) / 2)
    assert cgm_from_ranked_list(0, 1, ids, cams) == pytest.approx(0.5833333, abs=1e-6)
    assert cgm_from_ranked_list(0, 2, [0, 1], [2, 2]) is None  # no cross-camera positive: skipped
    # the chunked evaluator gives the same value when the distances produce that order
    dist = np.arange(6, dtype=np.float32)[None, :]
    res = evaluate_distmat(dist, [0], ids, [1], cams, cgm=True)
    assert res.mCGM == pytest.approx(0.5833333, abs=1e-6) and res.num_cgm_queries == 1


def test_cgm_chunked_matches_ranked_lists():
    rng = np.random.default_rng(3)
    qf, gf, q_ids, g_ids, q_cams, g_cams = random_split(rng, 30, 200, 8, 4, 3, True)
    dist = FeatureDistances(qf, gf).block(0, 30).numpy()
    expected = []
    for i in range(30):
        order = np.argsort(dist[i], kind="stable")
        v = cgm_from_ranked_list(q_ids[i], q_cams[i], g_ids[order], g_cams[order])
        if v is not None:
            expected.append(v)
    for rule in ("same_id_same_camera", "same_camera", "none"):
        res = evaluate_features(qf, gf, q_ids, g_ids, q_cams, g_cams, cgm=True, junk_rule=rule, chunk_size=8)
        assert res.num_cgm_queries == len(expected)
        assert res.mCGM == pytest.approx(np.mean(expected), abs=1e-9)
