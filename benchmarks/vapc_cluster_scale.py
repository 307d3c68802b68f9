"""Peak memory and time of one clustering step: usl's (kNN + O(kN) Jaccard + DBSCAN on all N) against vapc's
(the same inside each viewpoint subset, then cross-view merging of the cluster centroids), on N structured
random features with a viewpoint per row.

Features: identities of `--per-id` images split over `--views-per-id` of `--views` viewpoint bins; a row is its
identity's centre + its viewpoint's shared offset + noise, L2-normalised (128-d by default). kNN: faiss flat up to
50k rows, IVF above (as `benchmarks/cluster_scale.py`, whose `knn_options` both use). Each method runs in its own
process so that ru_maxrss is that method's peak (features and imports included).

    python benchmarks/vapc_cluster_scale.py --sizes 277797
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _measure import run_child  # noqa: E402  (the benchmarks folder is on sys.path)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_scale import knn_options  # noqa: E402  (the same kNN index choice as usl's benchmark)


def view_features(n: int, dim: int, views: int, per_id: int, views_per_id: int, seed: int = 0
                  ) -> tuple[torch.Tensor, np.ndarray]:
    """(features, viewpoint bin per row): see the module docstring."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    ids = max(1, n // per_id)
    identity = np.arange(n) % ids
    seen = np.stack([rng.choice(views, views_per_id, replace=False) for _ in range(ids)])   # ids x views_per_id
    view = seen[identity, (np.arange(n) // ids) % views_per_id]
    centres = torch.randn(ids, dim, generator=g)
    offsets = 0.8 * torch.randn(views, dim, generator=g)
    x = centres[torch.from_numpy(identity)] + offsets[torch.from_numpy(view)] + 0.35 * torch.randn(n, dim, generator=g)
    return torch.nn.functional.normalize(x, dim=1), view.astype(np.int64)


def one(method: str, n: int, args: argparse.Namespace) -> dict:
    from vreid.unsup.clustering import ClusteringConfig, cluster_features
    from vreid.unsup.vapc import progressive_labels

    torch.set_num_threads(args.threads)
    x, views = view_features(n, args.dim, args.views, args.per_id, args.views_per_id)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    cfg = ClusteringConfig(k=args.k, min_samples=4, knn_backend="faiss", knn_options=knn_options(n))
    t0 = time.perf_counter()
    if method == "usl":
        labels = cluster_features(x, args.eps, cfg)
        extra: dict = {}
    else:
        # each viewpoint subset gets the index its own size calls for
        sizes = np.bincount(views, minlength=args.views)
        cfg.knn_options = knn_options(int(sizes.max()))
        r = progressive_labels(x, views, args.eps, args.tau, cfg)
        labels = r.labels
        extra = {"intra_clusters": r.intra_clusters, "merges": r.merges, "rounds": r.rounds}
    seconds = time.perf_counter() - t0
    return {"method": method, "n": n, "k": args.k, "total_s": seconds, "clusters": int(labels.max() + 1),
            "outliers": int((labels < 0).sum()), "inputs_gb": base,
            "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, **extra}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="277797")
    p.add_argument("--methods", default="usl,vapc")
    p.add_argument("--k", type=int, default=30)
    p.add_argument("--eps", type=float, default=0.6)
    p.add_argument("--tau", type=float, default=0.7)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--views", type=int, default=5)
    p.add_argument("--per-id", type=int, default=12)
    p.add_argument("--views-per-id", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--one", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args)))
        return
    print("| method | N | k | total (s) | peak RSS (GB) | features + imports (GB) | clusters | outliers "
          "| intra-view clusters | cross-view merges | rounds |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in [int(s) for s in args.sizes.split(",") if s]:
        for method in [m for m in args.methods.split(",") if m]:
            cmd = [sys.executable, __file__, "--one", method, str(n), "--k", str(args.k), "--eps", str(args.eps),
                   "--tau", str(args.tau), "--dim", str(args.dim), "--views", str(args.views),
                   "--per-id", str(args.per_id), "--views-per-id", str(args.views_per_id),
                   "--threads", str(args.threads)]
            r, error = run_child(cmd)
            if r is None:
                print(f"| {method} | {n:,} | {args.k} | failed: {error[:100]} |",
                      flush=True)
                continue
            print(f"| {method} | {n:,} | {r['k']} | {r['total_s']:.1f} | {r['peak_gb']:.2f} | {r['inputs_gb']:.2f} "
                  f"| {r['clusters']:,} | {r['outliers']:,} | {r.get('intra_clusters', '-')} "
                  f"| {r.get('merges', '-')} | {r.get('rounds', '-')} |", flush=True)


if __name__ == "__main__":
    main()
