"""Evaluation with the gallery split over processes: shards simulated in one process, then 2 gloo processes,
each equal to the one-process result exactly (mAP, mINP, CMC, per-query AP and ranks, top-k lists)."""
from __future__ import annotations

import json
import os
import pickle
import socket
from contextlib import contextmanager

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from conftest import tiny_overrides
from vreid.data.records import ImageRecord
from vreid.eval import evaluate, evaluate_protocol, ranked_topk
from vreid.eval.distance import FeatureDistances
from vreid.eval.sharded import GALLERY_ALIGN, GalleryShard, evaluate_shards, shard_bounds

RULES = ("same_id_same_camera", "same_camera", "none")


def random_split(seed: int, integer: bool, n_q: int = 61, n_g: int = 233, dim: int = 6):
    """Features (integer ones: few distinct values, so many exact ties), ids with unmatched queries, cameras."""
    rng = np.random.default_rng(seed)
    q_ids, g_ids = rng.integers(0, 15, n_q), rng.integers(0, 15, n_g)
    q_ids[:3] = 99  # no gallery image at all
    q_cams, g_cams = rng.integers(0, 3, n_q), rng.integers(0, 3, n_g)
    draw = (lambda n: rng.integers(-1, 2, (n, dim))) if integer else (lambda n: rng.standard_normal((n, dim)))
    return (draw(n_q).astype(np.float32), draw(n_g).astype(np.float32), q_ids, g_ids, q_cams, g_cams)


def assert_same_result(got, want) -> None:
    assert got.mAP == want.mAP and got.mINP == want.mINP
    assert np.array_equal(got.cmc, want.cmc)
    assert got.num_queries == want.num_queries and got.num_valid_queries == want.num_valid_queries
    assert np.array_equal(got.first_match_rank, want.first_match_rank)
    assert np.array_equal(got.average_precision, want.average_precision, equal_nan=True)
    assert np.array_equal(got.ranked_indices, want.ranked_indices)
    assert np.array_equal(got.ranked_distances, want.ranked_distances)
    assert got.to_dict() == want.to_dict()


@contextmanager
def torch_threads(n: int):
    """`n` torch threads inside: MKL rounds some small products differently with another number of threads."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def test_shard_bounds_cut_as_array_split_then_align():
    for n, w in ((10, 3), (2, 3), (0, 2), (233, 2), (1000, 3)):
        split = [len(p) for p in np.array_split(np.arange(n), w)]
        assert [b - a for a, b in (shard_bounds(n, w, r) for r in range(w))] == split
        cuts = [shard_bounds(n, w, r, align=64) for r in range(w)]
        assert cuts[0][0] == 0 and cuts[-1][1] == n and all(a % 64 == 0 for a, _ in cuts)
        assert all(stop == start for (_, stop), (start, _) in zip(cuts, cuts[1:]))


def test_aligned_shards_compute_the_one_process_distances_bit_for_bit():
    # what exactness rests on; with unaligned starts MKL rounds a few edge entries of small blocks otherwise
    torch.manual_seed(0)
    for dim, rows, size, metric in ((6, 7, 233, "euclidean"), (64, 5, 1000, "euclidean"), (2048, 3, 301, "cosine"),
                                    (32, 61, 4097, "euclidean")):
        qf, gf = torch.randn(rows, dim), torch.randn(size, dim)
        whole = FeatureDistances(qf, gf, metric).block(0, rows)
        for num_shards in (2, 3):
            for r in range(num_shards):
                a, b = shard_bounds(size, num_shards, r, GALLERY_ALIGN)
                assert torch.equal(FeatureDistances(qf, gf[a:b], metric).block(0, rows), whole[:, a:b])


@pytest.mark.parametrize("integer", [True, False], ids=["ties", "floats"])
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("num_shards", [1, 2, 3])
def test_shards_in_one_process_equal_the_whole_gallery(num_shards, rule, integer):
    qf, gf, q_ids, g_ids, q_cams, g_cams = random_split(num_shards, integer)
    align = 1 if integer else GALLERY_ALIGN  # integer features: exact products, any cut gives the same distances
    for metric, chunk in (("euclidean", 7), ("cosine", None)):
        want = evaluate(qf, gf, q_ids, g_ids, q_cams, g_cams, metric=metric, junk_rule=rule, chunk_size=chunk,
                        top_k=12)
        shards = []
        for r in range(num_shards):
            start, stop = shard_bounds(len(gf), num_shards, r, align)
            shards.append(GalleryShard(qf, gf[start:stop], g_ids[start:stop], g_cams[start:stop], start, metric))
        got = evaluate_shards(shards, q_ids, q_cams, len(gf), junk_rule=rule, chunk_size=chunk, top_k=12,
                              metric=metric)
        assert 0 < got.num_valid_queries < len(q_ids)
        assert_same_result(got, want)
        idx, dist = ranked_topk(qf, gf, k=12, metric=metric, chunk_size=chunk or 4096)
        assert np.array_equal(got.ranked_indices, idx) and np.array_equal(got.ranked_distances, dist)


def test_ties_across_shard_borders_go_to_the_lower_index():
    # every gallery item at the same distance: a positive's rank is the number of valid items before it
    qf, gf = np.zeros((2, 4), np.float32), np.zeros((9, 4), np.float32)
    g_ids = np.array([5, 1, 1, 5, 2, 5, 3, 3, 5])
    shards = [GalleryShard(qf, gf[a:b], g_ids[a:b], np.zeros(b - a), a) for a, b in
              (shard_bounds(9, 3, r) for r in range(3))]
    got = evaluate_shards(shards, [5, 3], [0, 0], 9, junk_rule="none", top_k=9)
    want = evaluate(qf, gf, [5, 3], g_ids, [0, 0], np.zeros(9), junk_rule="none", top_k=9)
    assert_same_result(got, want)
    assert list(got.first_match_rank) == [0, 6]
    assert got.average_precision[1] == pytest.approx((1 / 7 + 2 / 8) / 2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def records(ids, cams) -> list[ImageRecord]:
    return [ImageRecord(f"/x/{i}.jpg", int(v), int(c)) for i, (v, c) in enumerate(zip(ids, cams))]


CASES = (("veri776", "euclidean"), ("plain_same_camera", "cosine"), ("plain_none", "euclidean"))


def _gloo_worker(rank: int, port: int, folder: str) -> None:
    """One of two processes: its shares of the features in, the sharded results of every case out."""
    from vreid.engine.distributed import DistInfo
    from vreid.engine.sharded_eval import sharded_protocol_result

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        with open(os.path.join(folder, "inputs.pkl"), "rb") as f:
            qf, gf, query, gallery = pickle.load(f)
        q0, q1 = shard_bounds(len(qf), 2, rank)
        g0, g1 = shard_bounds(len(gf), 2, rank, GALLERY_ALIGN)
        out = {case: sharded_protocol_result(qf[q0:q1], gf[g0:g1], query, gallery, case[0], case[1], top_k=15,
                                             info=DistInfo(rank, 2)) for case in CASES}
        with open(os.path.join(folder, f"rank{rank}.pkl"), "wb") as f:
            pickle.dump(out, f)
    finally:
        torch.distributed.destroy_process_group()


def test_two_gloo_processes_equal_one_process(tmp_path):
    qf, gf, q_ids, g_ids, q_cams, g_cams = random_split(4, integer=False, n_q=45, n_g=301, dim=32)
    qf[5:9], gf[100:140] = 0, 0  # and exact ties, across the shard border (gallery items 0..127 | 128..300)
    query, gallery = records(q_ids, q_cams), records(g_ids, g_cams)
    with open(tmp_path / "inputs.pkl", "wb") as f:
        pickle.dump((torch.from_numpy(qf), torch.from_numpy(gf), query, gallery), f)
    mp.spawn(_gloo_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        with open(tmp_path / f"rank{rank}.pkl", "rb") as f:
            got = pickle.load(f)
        for (protocol, metric), result in got.items():
            with torch_threads(1):  # as in the workers
                want = evaluate_protocol(protocol, qf, gf, query, gallery, metric=metric, top_k=15)
            assert_same_result(result, want)


def _eval_worker(rank: int, port: int, folder: str, config: list[str], run: str) -> None:
    """One of two processes evaluating a trained run as `vreid eval` does, without and with re-ranking."""
    from vreid.config import load_experiment
    from vreid.engine.run import run_evaluation

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        cfg = load_experiment(None, config)
        out = {rerank: run_evaluation(cfg, run, rerank=rerank) for rerank in ("none", "kreciprocal")}
        with open(os.path.join(folder, f"rank{rank}.json"), "w") as f:
            json.dump(out, f)
    finally:
        torch.distributed.destroy_process_group()


def test_vreid_eval_in_two_processes(finished_run, tiny_world, tmp_path):
    from vreid.config import load_experiment
    from vreid.engine.bundle import load_bundle
    from vreid.engine.evaluate import evaluate_and_save
    from vreid.engine.extract import extract_features
    from vreid.engine.run import load_data

    run, _ = finished_run
    config = tiny_overrides(tiny_world, tmp_path / "unused")
    before = set((run / "eval").glob("*")) if (run / "eval").exists() else set()
    mp.spawn(_eval_worker, args=(free_port(), str(tmp_path), config, str(run)), nprocs=2, join=True)
    got = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert got[0] == got[1]  # every rank returns the results, and names the same folder
    assert len(set((run / "eval").glob("*")) - before) == 2  # one folder per evaluation, not one per process
    cfg, method = load_experiment(None, config), load_bundle(run)
    dataset = load_data(cfg)

    def embedded_in_shares(records, align: int) -> torch.Tensor:
        # as the workers embed them: a batch of 8 images may round otherwise than the same images among 16
        cuts = (shard_bounds(len(records), 2, r, align) for r in (0, 1))
        return torch.cat([extract_features(method, records[a:b], cfg.data) for a, b in cuts if b > a])

    with torch_threads(1):
        qf, gf = embedded_in_shares(dataset.query, 1), embedded_in_shares(dataset.gallery, GALLERY_ALIGN)
        for rerank, results in got[0].items():  # "none" is sharded, "kreciprocal" scored on rank 0
            folder = results.pop("output_dir")
            want = evaluate_and_save(qf, gf, dataset, cfg, tmp_path / rerank, rerank)
            assert results == want and json.loads(open(f"{folder}/results.json").read()) == want
            saved, reference = np.load(f"{folder}/ranked.npz"), np.load(tmp_path / rerank / "ranked.npz")
            for key in ("indices", "distances", "rerank"):
                assert np.array_equal(saved[key], reference[key])
