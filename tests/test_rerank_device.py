"""Every re-ranker runs on the device its features live on, equals its CPU result there, and never allocates
an N x N tensor."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from vreid.rerank import RERANKERS, k_reciprocal, knn, sparse_rerank_graph
from vreid.rerank.dense_reference import dense_re_ranking, euclidean
from vreid.rerank.knn import knn_tensors

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

#: options that make each re-ranker's kNN / expansion lists reach across many items at this small N
OPTIONS = {"kreciprocal": {"k1": 20, "k2": 6}, "sparse": {"k": 15}, "aqe": {"k": 5},
           "alpha_qe": {"k": 5, "alpha": 3.0}, "fastreid_aqe": {"qe_k": 10}}


def features(kind: str, n_q: int = 40, n_g: int = 260, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian features, or small-integer ones whose distances tie everywhere."""
    rng = np.random.default_rng(seed)
    if kind == "tied":
        x = rng.integers(0, 3, (n_q + n_g, 6)).astype(np.float32)
    else:
        x = rng.normal(size=(n_q + n_g, 16)).astype(np.float32)
    return x[:n_q], x[n_q:]


def all_rows(source) -> torch.Tensor:
    return source.block(0, source.num_query)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(OPTIONS))
@pytest.mark.parametrize("kind", ["gauss", "tied"])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_reranker_blocks_live_on_the_features_device_and_equal_cpu(device, name, kind, metric):
    qf, gf = features(kind)
    ref = all_rows(RERANKERS.get(name)(qf, gf, metric=metric, **OPTIONS[name])).numpy()
    out = all_rows(RERANKERS.get(name)(torch.from_numpy(qf).to(device), torch.from_numpy(gf).to(device),
                                       metric=metric, **OPTIONS[name]))
    assert out.device.type == device
    np.testing.assert_allclose(out.cpu().numpy(), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_k_reciprocal_on_device_equals_dense_reference(device, backend):
    qf, gf = features("gauss", 60, 340, seed=1)
    ref = dense_re_ranking(euclidean(qf, gf), euclidean(qf, qf), euclidean(gf, gf), 20, 6, 0.3)
    out = k_reciprocal(torch.from_numpy(qf).to(device), torch.from_numpy(gf).to(device), knn_backend=backend)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_knn_tensors_on_device_equal_cpu_numpy(device, backend):
    x = torch.from_numpy(np.concatenate(features("tied", seed=2)))
    options = {"chunk_size": 37, "block_width": 64} if backend == "torch" else {}
    dist, idx, row_max = knn_tensors(x.to(device), 12, backend, **options)
    assert {t.device.type for t in (dist, idx, row_max)} == {device}
    for a, b in zip((dist, idx, row_max), knn(x, 12, backend)):
        np.testing.assert_array_equal(a.cpu().numpy(), b)


@pytest.mark.parametrize("device", DEVICES)
def test_sparse_rerank_graph_on_device_equals_cpu(device):
    x = torch.from_numpy(np.concatenate(features("gauss", seed=3)))
    r_ref, i_ref = sparse_rerank_graph(x, k=12)
    r, i = sparse_rerank_graph(x.to(device), k=12)
    np.testing.assert_allclose(r, r_ref, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(i, i_ref)


class LargestAllocation(TorchDispatchMode):
    """Records the largest storage (in elements) any torch op returns while active."""

    def __init__(self) -> None:
        super().__init__()
        self.largest, self.op = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                size = t.untyped_storage().nbytes() // max(1, t.element_size())
                if size > self.largest:
                    self.largest, self.op = size, str(func)
        return out


def test_the_largest_allocation_is_far_below_n_squared():
    """With N = 6,000 the re-rankers' fixed blocks (at most ~8M entries) stay under N^2 / 2 = 18M; a single
    N x N temporary anywhere in the torch work would exceed it."""
    qf, gf = features("gauss", 60, 5940, seed=4)
    n = len(qf) + len(gf)
    q, g = torch.from_numpy(qf), torch.from_numpy(gf)
    small_knn = {"chunk_size": 256, "block_width": 512}
    runs = {
        "kreciprocal": lambda: all_rows(RERANKERS.get("kreciprocal")(q, g, knn_options=small_knn)),
        "k_reciprocal": lambda: k_reciprocal(q, g, knn_options=small_knn),
        "sparse": lambda: all_rows(RERANKERS.get("sparse")(q, g, knn_options=small_knn)),
        "fastreid_aqe": lambda: all_rows(RERANKERS.get("fastreid_aqe")(q, g, knn_options=small_knn)),
        "aqe": lambda: all_rows(RERANKERS.get("aqe")(q, g)),
    }
    for name, run in runs.items():
        with LargestAllocation() as seen:
            run()
        assert 0 < seen.largest < n * n // 2, f"{name}: {seen.op} allocated {seen.largest:,} elements"


def test_the_allocation_check_sees_an_n_by_n_temporary():
    x = torch.randn(300, 4)
    with LargestAllocation() as seen:
        (x[:, None, 0] == x[None, :, 0]).any()
    assert seen.largest >= 300 * 300
