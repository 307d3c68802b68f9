"""Protocols from records, VehicleID draws, ranked lists, tables and JSON."""
from __future__ import annotations

import json

import numpy as np
import pytest

from vreid.data.records import ImageRecord
from vreid.eval import (
    PROTOCOLS, evaluate, evaluate_protocol, format_table, ranked_topk, save_result, vehicleid_gallery_draw,
)


def records(ids, cams, prefix):
    return [ImageRecord(path=f"/{prefix}/{i}.jpg", vehicle_id=int(v), camera_id=int(c))
            for i, (v, c) in enumerate(zip(ids, cams))]


def split(seed=0, n_q=40, n_g=200):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(30, 16))
    ids = rng.integers(0, 30, n_q + n_g)
    cams = rng.integers(0, 4, n_q + n_g)
    x = (centres[ids] + rng.normal(size=(n_q + n_g, 16))).astype(np.float32)
    return x[:n_q], x[n_q:], ids[:n_q], ids[n_q:], cams[:n_q], cams[n_q:]


def test_registry_and_junk_rules():
    qf, gf, q_ids, g_ids, q_cams, g_cams = split()
    q, g = records(q_ids, q_cams, "q"), records(g_ids, g_cams, "g")
    assert {"veri776", "veriwild", "veriwild_keep_same_camera", "vehicleid", "plain"} <= set(PROTOCOLS.names())
    for name, rule in [("veri776", "same_id_same_camera"), ("veriwild", "same_id_same_camera"),
                       ("veriwild_keep_same_camera", "none"), ("plain_same_camera", "same_camera")]:
        res = evaluate_protocol(name, qf, gf, q, g)
        direct = evaluate(qf, gf, q_ids, g_ids, q_cams, g_cams, junk_rule=rule)
        assert res.protocol == name and res.junk_rule == rule and res.mAP == direct.mAP
    custom = evaluate_protocol("plain", qf, gf, q, g, junk_rule="none")
    assert custom.junk_rule == "none"
    text = format_table(evaluate_protocol("veriwild_keep_same_camera", qf, gf, q, g, cgm=True))
    assert "nothing is removed" in text and "mCGM" in text


def test_vehicleid_draws():
    rng = np.random.default_rng(2)
    ids = np.repeat(np.arange(25), rng.integers(2, 6, 25))
    feats = (np.eye(25)[ids] * 3 + rng.normal(size=(len(ids), 25))).astype(np.float32)
    test = records(ids, np.zeros(len(ids)), "t")
    res = evaluate_protocol("vehicleid", feats, feats, test, list(test))
    draws = res.extra["draws"]
    assert len(draws) == 10 and res.extra["seeds"] == list(range(10))
    assert res.mAP == pytest.approx(np.mean([d["mAP"] for d in draws]))
    assert res.rank(1) == pytest.approx(np.mean([d["rank1"] for d in draws]))
    assert res.rank(5) == pytest.approx(np.mean([d["rank5"] for d in draws]))
    assert res.num_queries == len(ids) - 25 and res.junk_rule == "none"
    g, q = vehicleid_gallery_draw(ids, 4)
    assert sorted(ids[g]) == list(range(25)) and len(np.intersect1d(g, q)) == 0 and len(g) + len(q) == len(ids)
    g2, _ = vehicleid_gallery_draw(ids, 4)
    assert (g == g2).all() and not (g == vehicleid_gallery_draw(ids, 5)[0]).all()  # fixed seeds, distinct draws
    again = evaluate_protocol("vehicleid", feats, feats, test, list(test))
    assert again.to_dict() == res.to_dict()


def test_ranked_topk_matches_argsort():
    qf, gf, *_ = split(3)
    gf[7] = gf[3]  # an exact tie: the lower gallery index comes first
    idx, dist = ranked_topk(qf, gf, k=12, chunk_size=7)
    full = np.sqrt(np.maximum(((qf[:, None].astype(np.float64) - gf[None]) ** 2).sum(-1), 0))
    for i in range(len(qf)):
        order = np.argsort(full[i], kind="stable")[:12]
        assert list(idx[i]) == list(order)
        np.testing.assert_allclose(dist[i], full[i, order], rtol=1e-4)
    ci, cd = ranked_topk(qf, gf, k=5, metric="cosine")
    assert (np.diff(cd, axis=1) >= 0).all() and cd.min() >= -1e-6


def test_json_export(tmp_path):
    qf, gf, q_ids, g_ids, q_cams, g_cams = split(4)
    res = evaluate(qf, gf, q_ids, g_ids, q_cams, g_cams, rerank="kreciprocal")
    save_result(tmp_path / "r.json", res)
    loaded = json.loads((tmp_path / "r.json").read_text())
    assert loaded["mAP"] == pytest.approx(res.mAP) and loaded["rerank"] == "kreciprocal"
    assert loaded["rank1"] == pytest.approx(res.cmc[0]) and "junk_rule_text" in loaded
    table = format_table(res, rich=True)
    assert table.row_count == 1
