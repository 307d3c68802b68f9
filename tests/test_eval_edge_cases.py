"""Queries without a valid match: skipped and counted by the library, a clear error from the engine; VehicleID
test lists with one image per vehicle."""
from __future__ import annotations

import numpy as np
import pytest

from test_data_trees import make_vehicleid, text
from test_eval_metrics import full_sort_reference
from test_eval_protocols import records
from vreid.config.schema import ExperimentConfig
from vreid.data import check_dataset, load_layout
from vreid.data.records import ReidDataset
from vreid.engine.evaluate import evaluate_split
from vreid.errors import VreidError
from vreid.eval import evaluate, evaluate_protocol
from vreid.eval.distance import FeatureDistances
from vreid.eval.errors import EvaluationError


def features(n_q: int, n_g: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n_q, 6)).astype(np.float32), rng.normal(size=(n_g, 6)).astype(np.float32)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 50])
def test_all_invalid_block_mid_run_is_skipped_and_counted(chunk_size):
    qf, gf = features(9, 30)
    g_ids, g_cams = np.arange(30) % 5, np.arange(30) % 3
    # queries 2..5 (whole blocks for chunk sizes 1, 2 and 3) have no valid match: their only positives are
    # same-id same-camera junk (id 0 on camera 0) or their id is absent; queries 0..2 and 6..8 mix valid/invalid
    q_ids = np.array([1, 2, 9, 0, 9, 0, 3, 9, 4])
    q_cams = np.array([1, 2, 0, 0, 1, 0, 1, 0, 2])
    g_cams[g_ids == 0] = 0
    res = evaluate(qf, gf, q_ids, g_ids, q_cams, g_cams, chunk_size=chunk_size)
    dist = FeatureDistances(qf, gf).block(0, 9).numpy()
    ref_map, ref_inp, ref_cmc, n_valid = full_sort_reference(dist, q_ids, g_ids, q_cams, g_cams,
                                                             "same_id_same_camera", 30)
    assert (res.num_queries, res.num_valid_queries, res.num_skipped_queries) == (9, 4, 5) and n_valid == 4
    assert res.mAP == pytest.approx(ref_map, abs=1e-6) and res.mINP == pytest.approx(ref_inp, abs=1e-6)
    np.testing.assert_allclose(res.cmc, ref_cmc, atol=1e-6)
    assert np.isnan(res.average_precision[3:6]).all() and (res.first_match_rank[3:6] == -1).all()


@pytest.mark.parametrize("chunk_size", [1, 50])
def test_no_valid_query_at_all_returns_zeros(chunk_size):
    qf, gf = features(4, 6)
    res = evaluate(qf, gf, [1, 2, 3, 1], [1, 2, 3, 1, 2, 3], [0] * 4, [0] * 6, chunk_size=chunk_size)
    assert (res.mAP, res.mINP, res.num_queries, res.num_valid_queries) == (0.0, 0.0, 4, 0)
    assert res.cmc.shape == (6,) and not res.cmc.any() and res.to_dict()["num_skipped_queries"] == 4


def one_camera_dataset() -> ReidDataset:
    ids = [1, 2, 3, 1, 2, 3, 4]
    q, g = records(ids[:3], [5] * 3, "q"), records(ids[3:], [5] * 4, "g")
    return ReidDataset(name="cams", root="/data/cams", train=[], query=q, gallery=g, protocol="veri776")


def test_one_camera_records_score_zero_in_the_library_and_fail_clearly_in_the_engine():
    ds = one_camera_dataset()
    qf, gf = features(3, 4)
    res = evaluate_protocol("veri776", qf, gf, ds.query, ds.gallery)
    assert (res.mAP, res.num_queries, res.num_valid_queries) == (0.0, 3, 0)
    with pytest.raises(EvaluationError) as e:
        evaluate_split(qf, gf, ds, ExperimentConfig())
    assert isinstance(e.value, VreidError)
    message = str(e.value)
    assert message.startswith("dataset at /data/cams: none of the 3 queries has a match in the gallery under "
                              "protocol 'veri776', junk rule 'same_id_same_camera'")
    assert "all images come from one camera" in message and "fix: set eval.protocol=plain_none" in message
    cfg = ExperimentConfig()
    cfg.eval.protocol = "plain_none"  # the fix: same-camera matches count
    assert evaluate_split(qf, gf, ds, cfg)["num_valid_queries"] == 3


def one_image_per_vehicle(tmp_path):
    root = make_vehicleid(tmp_path)
    text(root / "train_test_split/test_list_800.txt", "0000004 20\n0000006 21\n")
    return root


def test_vehicleid_one_image_per_vehicle_is_a_check_problem(tmp_path):
    got = [str(p) for p in check_dataset(one_image_per_vehicle(tmp_path), "vehicleid")]
    assert len(got) == 1, got
    assert got[0].startswith("train_test_split/test_list_800.txt: each of the 2 vehicle(s) in the test list has "
                             "one image, so the vehicleid protocol has no query")
    assert "(fix: list at least two images of each vehicle, as the official" in got[0]


def test_vehicleid_one_image_per_vehicle_raises_in_protocol_and_engine(tmp_path):
    ds = load_layout("vehicleid", one_image_per_vehicle(tmp_path))
    feats = np.eye(2, dtype=np.float32)
    with pytest.raises(EvaluationError, match=r"protocol 'vehicleid': no vehicle in the test list has two or "
                                              r"more images \(2 image\(s\)\), so there is no query"):
        evaluate_protocol("vehicleid", feats, feats, ds.query, ds.gallery)
    with pytest.raises(EvaluationError, match=r"fix: use a test list \(train_test_split/test_list_<size>.txt\)"):
        evaluate_split(feats, feats, ds, ExperimentConfig())
