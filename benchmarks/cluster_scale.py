"""Time and peak memory of one clustering step (kNN + re-ranking + DBSCAN) versus N, sparse O(kN) vs dense.

sparse: faiss kNN (exact flat, or IVF for large N), `vreid.rerank.sparse_rerank_graph` (O(kN) mutual-kNN
weighted Jaccard), `vreid.unsup.sparse_dbscan`. dense: what cluster-contrast-style code does: an N x N
weight matrix V and an N x N Jaccard distance matrix, then scikit-learn DBSCAN(metric="precomputed") on it;
it is skipped (with its memory need printed) where two N x N float32 arrays exceed --max-dense-gb.
Each (method, N, k) runs in its own process so that ru_maxrss is that run's peak. The sparse re-ranking works
in row blocks bounded by `vreid.rerank.sparse_knn.COMPARE_BUDGET` (b x k^3 compared entries); `--block ROWS`
forces a fixed block instead, to see what an unbounded block costs.

    python benchmarks/cluster_scale.py --sizes 10000,100000,277797 --dense-sizes 10000,20000
    python benchmarks/cluster_scale.py --sizes 100000 --dense-sizes "" --k 30,50
    python benchmarks/cluster_scale.py --sizes 100000 --dense-sizes "" --k 50 --block 4096
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np
import torch

from _measure import run_child  # noqa: E402  (the benchmarks folder is on sys.path)


def features(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Identities of ~10 images (Gaussian centres of spread 1 plus noise 0.35 per coordinate), L2-normalised."""
    g = torch.Generator().manual_seed(seed)
    ids = max(1, n // 10)
    centres = torch.randn(ids, dim, generator=g)
    x = centres[torch.arange(n) % ids] + 0.35 * torch.randn(n, dim, generator=g)
    return torch.nn.functional.normalize(x, dim=1)


def knn_options(n: int) -> dict:
    if n <= 50_000:
        return {"index": "flat"}
    return {"index": "ivf", "nlist": int(4 * np.sqrt(n)), "nprobe": 16}


def run_sparse(x: torch.Tensor, k: int, eps: float, block: int | None = None) -> dict:
    from vreid.rerank import knn, sparse_rerank_graph
    from vreid.unsup import drop_small_clusters, sparse_dbscan

    n = x.shape[0]
    t0 = time.perf_counter()
    knn(x, k, "faiss", with_row_max=False, **knn_options(n))         # timed alone, for the breakdown
    t_knn = time.perf_counter() - t0
    t1 = time.perf_counter()
    r, idx = sparse_rerank_graph(x, k=k, knn_backend="faiss", block=block, knn_options=knn_options(n))
    t_graph = time.perf_counter() - t1
    t2 = time.perf_counter()
    labels = drop_small_clusters(sparse_dbscan(r, idx, eps, 4), 4)
    t_db = time.perf_counter() - t2
    return {"knn_s": t_knn, "rerank_s": t_graph - t_knn, "dbscan_s": t_db, "total_s": t_graph + t_db,
            "clusters": int(labels.max() + 1), "outliers": int((labels < 0).sum())}


def dense_jaccard(x: torch.Tensor, k: int) -> np.ndarray:
    """The same weighted Jaccard over kNN weight vectors, for every pair, as an N x N matrix (cluster-contrast
    style: a dense V, then shared mass accumulated column by column of each row's list)."""
    from vreid.rerank import knn

    n = x.shape[0]
    sqd, idx, _ = knn(x, k, "faiss", with_row_max=False, index="flat")
    w = np.exp(-np.sqrt(np.maximum(sqd, 0))).astype(np.float32)
    v = np.zeros((n, n), np.float32)
    np.put_along_axis(v, idx, w, 1)
    total = w.sum(1)
    jac = np.empty((n, n), np.float32)
    for s in range(0, n, 1024):
        rows = slice(s, min(n, s + 1024))
        shared = np.zeros((rows.stop - s, n), np.float32)
        for m in range(k):
            shared += np.minimum(w[rows, m][:, None], v[:, idx[rows, m]].T)
        jac[rows] = 1 - shared / (total[rows, None] + total[None, :] - shared)
    np.clip(jac, 0.0, 1.0, out=jac)             # float rounding leaves -1e-7 where lists coincide
    np.fill_diagonal(jac, 0.0)
    return jac


def run_dense(x: torch.Tensor, k: int, eps: float) -> dict:
    from sklearn.cluster import DBSCAN

    t0 = time.perf_counter()
    jac = dense_jaccard(x, k)
    t1 = time.perf_counter()
    labels = DBSCAN(eps=eps, min_samples=4, metric="precomputed", n_jobs=1).fit(jac).labels_
    t2 = time.perf_counter()
    return {"rerank_s": t1 - t0, "dbscan_s": t2 - t1, "total_s": t2 - t0, "clusters": int(labels.max() + 1),
            "outliers": int((labels < 0).sum())}


def one(method: str, n: int, k: int, eps: float, dim: int, block: int | None = None) -> dict:
    from vreid.rerank.sparse_knn import COMPARE_BUDGET

    torch.set_num_threads(2)
    x = features(n, dim)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out = run_sparse(x, k, eps, block) if method == "sparse" else run_dense(x, k, eps)
    out.update(method=method, n=n, k=k, peak_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
               inputs_gb=base, block=(block or max(1, COMPARE_BUDGET // k ** 3)) if method == "sparse" else None)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000,277797")
    p.add_argument("--dense-sizes", default="10000,20000")
    p.add_argument("--k", default="30", help="comma-separated neighbour counts")
    p.add_argument("--block", type=int, default=None, help="rows per re-ranking block (default: the budget's)")
    p.add_argument("--eps", type=float, default=0.6)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--max-dense-gb", type=float, default=20.0)
    p.add_argument("--one", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), int(args.k), args.eps, args.dim, args.block)))
        return
    ks = [int(k) for k in args.k.split(",") if k]
    jobs = [("sparse", int(n), k) for n in args.sizes.split(",") if n for k in ks] + \
           [("dense", int(n), k) for n in args.dense_sizes.split(",") if n for k in ks]
    print("| method | N | k | block rows | kNN (s) | re-ranking (s) | DBSCAN (s) | total (s) | peak RSS (GB) | clusters "
          "| outliers |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for method, n, k in jobs:
        need = 2 * n * n * 4 / 2**30
        if method == "dense" and need > args.max_dense_gb:
            print(f"| dense | {n:,} | {k} | | | | | not run: 2 N^2 float32 = {need:,.0f} GB | | | |", flush=True)
            continue
        cmd = [sys.executable, __file__, "--one", method, str(n), "--k", str(k), "--eps", str(args.eps),
               "--dim", str(args.dim)] + (["--block", str(args.block)] if args.block else [])
        r, error = run_child(cmd)
        if r is None:
            print(f"| {method} | {n:,} | {k} | failed: {error[:80]} |", flush=True)
            continue
        print(f"| {method} | {n:,} | {k} | {r['block'] or '-'} | {r.get('knn_s', float('nan')):.1f} "
              f"| {r['rerank_s']:.1f} | {r['dbscan_s']:.1f} | {r['total_s']:.1f} | {r['peak_gb']:.2f} "
              f"| {r['clusters']:,} | {r['outliers']:,} |", flush=True)


if __name__ == "__main__":
    main()
