"""Evaluation on the features' device: one code path (run here on the CPU, and on CUDA where there is one)
that equals the numpy-input result; blocks sized from the device's free memory."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vreid.eval import evaluate, ranked_topk
from vreid.eval.distance import FeatureDistances, auto_chunk_size, source_device
from vreid.eval.verification import verify_distances

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def case(seed: int = 0):
    rng = np.random.default_rng(seed)
    q_ids, g_ids = rng.integers(0, 12, 40), rng.integers(0, 12, 300)
    q_cams, g_cams = rng.integers(0, 3, 40), rng.integers(0, 3, 300)
    qf = rng.integers(-2, 3, (40, 16)).astype(np.float32)   # small integers: many tied distances
    gf = rng.integers(-2, 3, (300, 16)).astype(np.float32)
    return qf, gf, q_ids, g_ids, q_cams, g_cams


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_metrics_on_device_tensors_equal_the_numpy_result(device, metric):
    qf, gf, q_ids, g_ids, q_cams, g_cams = case()
    ref = evaluate(qf, gf, q_ids, g_ids, q_cams, g_cams, metric=metric, cgm=True, roc=True, top_k=7, chunk_size=9)
    got = evaluate(torch.from_numpy(qf).to(device), torch.from_numpy(gf).to(device), q_ids, g_ids, q_cams, g_cams,
                   metric=metric, cgm=True, roc=True, top_k=7, chunk_size=9)
    assert got.mAP == ref.mAP and got.mINP == ref.mINP and np.array_equal(got.cmc, ref.cmc)
    assert got.mCGM == ref.mCGM and got.verification.summary() == ref.verification.summary()
    assert np.array_equal(got.ranked_indices, ref.ranked_indices)
    assert np.array_equal(got.ranked_distances, ref.ranked_distances)


@pytest.mark.parametrize("device", DEVICES)
def test_blocks_are_computed_where_the_features_are(device):
    qf, gf, q_ids, g_ids, q_cams, g_cams = case(1)
    source = FeatureDistances(torch.from_numpy(qf).to(device), torch.from_numpy(gf).to(device))
    assert source_device(source).type == device and source.block(0, 5).device.type == device
    idx, dist = ranked_topk(None, None, k=5, source=source)
    ref_idx, ref_dist = ranked_topk(None, None, k=5, source=FeatureDistances(qf, gf))
    assert np.array_equal(idx, ref_idx) and np.array_equal(dist, ref_dist)
    roc = verify_distances(source, q_ids, g_ids, q_cams, g_cams, chunk_size=4)
    ref = verify_distances(FeatureDistances(qf, gf), q_ids, g_ids, q_cams, g_cams, chunk_size=4)
    assert roc.summary() == ref.summary()


def test_blocks_on_a_gpu_are_sized_from_its_free_memory(monkeypatch):
    calls = []

    def free_and_total(device):
        calls.append(device)
        return 64 * 2**20, 80 * 2**30   # 64 MiB free of 80 GiB

    monkeypatch.setattr(torch.cuda, "mem_get_info", free_and_total)
    on_cpu = auto_chunk_size(100_000, device="cpu")
    on_gpu = auto_chunk_size(100_000, device="cuda:0")
    assert calls == [torch.device("cuda:0")] and on_cpu == auto_chunk_size(100_000)
    assert on_gpu == (32 * 2**20) // (100_000 * 12) < on_cpu   # half the free memory, 12 bytes an element
