"""Time and peak memory of k-reciprocal re-ranking: the dense published algorithm vs vreid's sparse one.

Each (N, mode) runs in its own subprocess so that peak RSS belongs to it alone. N = Q + G with Q = N/6.
    .venv/bin/python benchmarks/rerank_scale.py                          # dense + sparse up to N=12,000,
                                                                         # equality at 5,000, sparse at 138,517
    .venv/bin/python benchmarks/rerank_scale.py --sizes 5000 --modes dense sparse check
    .venv/bin/python benchmarks/rerank_scale.py --sizes 12000 --modes dense sparse --repeat 3   # medians
Modes: dense (vreid.rerank.dense_reference, distance matrices included), sparse (vreid.rerank.k_reciprocal,
features in, Q x G matrix out), check (both, max |difference|), sparse_eval (vreid.eval.evaluate with
rerank="kreciprocal", block by block: for N where the Q x G matrix itself should not be held), knn (the
exact torch kNN pass alone, k = k1 + 1 = 21 over all N rows, as k_reciprocal runs it).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PLAN = (("5000", "check"), ("12000", "dense"), ("12000", "sparse"), ("138517", "sparse_eval"))


def split_sizes(n: int) -> tuple[int, int]:
    q = 10000 if n == 138517 else n // 6
    return q, n - q


def child(mode: str, n: int, dim: int, threads: int) -> dict:
    import numpy as np
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from _measure import clustered_split, current_rss_mb, peak_rss_mb
    # imported before the clock starts and before the baseline: library imports are not re-ranking time
    from vreid.eval import evaluate
    from vreid.rerank import k_reciprocal, knn
    from vreid.rerank.dense_reference import dense_re_ranking, euclidean

    torch.set_num_threads(threads)
    q, g = split_sizes(n)
    qf, gf, q_ids, g_ids, q_cams, g_cams = clustered_split(q, g, dim, num_ids=max(1, g // 13), spread=0.6)
    if mode == "sparse_eval":
        before = evaluate(qf, gf, q_ids, g_ids, q_cams, g_cams)
    base = current_rss_mb()
    out = {"mode": mode, "N": n, "Q": q, "G": g, "dim": dim, "loadavg_start": os.getloadavg()[0]}
    t0 = time.perf_counter()
    if mode in ("dense", "check"):
        qn, gn = qf.numpy(), gf.numpy()
        dists = euclidean(qn, gn), euclidean(qn, qn), euclidean(gn, gn)
        out["distance_seconds"] = time.perf_counter() - t0
        dense = dense_re_ranking(*dists)
    if mode == "check":
        out["max_abs_diff"] = float(np.abs(k_reciprocal(qf, gf) - dense).max())
    if mode == "sparse":
        k_reciprocal(qf, gf)
    if mode == "knn":
        knn(torch.cat([qf, gf]), 21, "torch")
    if mode == "sparse_eval":
        res = evaluate(qf, gf, q_ids, g_ids, q_cams, g_cams, rerank="kreciprocal")
        out.update(mAP_before=before.mAP, mAP_after=res.mAP, rank1_before=float(before.cmc[0]),
                   rank1_after=float(res.cmc[0]))
    out.update(seconds=time.perf_counter() - t0, peak_rss_mb=peak_rss_mb(), base_rss_mb=base,
               loadavg_end=os.getloadavg()[0])
    return out


def run_child(mode: str, n: str, args: argparse.Namespace) -> dict | str:
    cmd = [sys.executable, __file__, "--child", mode, n, "--dim", str(args.dim), "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return (proc.stderr.strip().splitlines() or ["failed"])[-1]
    return json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="*", help="N values (default: the built-in plan)")
    ap.add_argument("--modes", nargs="*", default=["dense", "sparse"])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1,
                    help="run the plan this many times round-robin; report the median time and the largest peak")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.dim, args.threads)))
        return
    plan = [(n, m) for n in args.sizes for m in args.modes] if args.sizes else list(PLAN)
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    runs: dict[tuple[str, str], list[dict]] = {key: [] for key in plan}
    failed: dict[tuple[str, str], str] = {}
    for _ in range(args.repeat):                 # round-robin, so that a change in load hits every mode
        for key in plan:
            r = run_child(key[1], key[0], args)
            if isinstance(r, str):
                failed[key] = r
            else:
                runs[key].append(r)
    print("| N (Q + G) | dim | method | time (s) | peak RSS (MB) | above inputs (MB) | notes |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    rows, median_time = [], {}
    for key in plan:
        n, mode = key
        if not runs[key]:
            print(f"| {int(n):,} | {args.dim} | {mode} | failed | | | {failed.get(key, '')} |")
            continue
        rs = runs[key]
        r = dict(rs[0], seconds=statistics.median(x["seconds"] for x in rs),
                 distance_seconds=statistics.median(x.get("distance_seconds", 0.0) for x in rs),
                 peak_rss_mb=max(x["peak_rss_mb"] for x in rs),
                 above_mb=max(x["peak_rss_mb"] - x["base_rss_mb"] for x in rs), all_seconds=[x["seconds"] for x in rs])
        rows.append(r)
        median_time[key] = r
        notes = {
            "dense": f"of which distance matrices {r['distance_seconds']:.1f} s (routine alone "
                     f"{r['seconds'] - r['distance_seconds']:.1f} s)",
            "check": f"dense + sparse; max abs difference {r.get('max_abs_diff', 0):.2e}",
            "sparse": "features in, Q x G matrix out",
            "knn": "k = 21 neighbours of all N rows, torch backend",
            "sparse_eval": (f"evaluate(rerank='kreciprocal'): mAP {100 * r.get('mAP_before', 0):.1f} -> "
                            f"{100 * r.get('mAP_after', 0):.1f}, R-1 {100 * r.get('rank1_before', 0):.1f} -> "
                            f"{100 * r.get('rank1_after', 0):.1f}"),
        }[mode]
        if len(rs) > 1:
            notes += f"; runs {', '.join(f'{s:.1f}' for s in r['all_seconds'])} s"
        name = {"dense": "dense reference", "check": "check", "sparse": "vreid sparse", "knn": "kNN pass",
                "sparse_eval": "vreid sparse + metrics"}[mode]
        print(f"| {r['N']:,} ({r['Q']:,} + {r['G']:,}) | {r['dim']} | {name} | {r['seconds']:.1f} | "
              f"{r['peak_rss_mb']:.0f} | {r['above_mb']:.0f} | {notes} |")
    for n in dict.fromkeys(n for n, _ in plan):
        dense, sparse = median_time.get((n, "dense")), median_time.get((n, "sparse"))
        if dense and sparse:
            print(f"\nN = {int(n):,}: sparse is {dense['seconds'] / sparse['seconds']:.1f}x faster than the dense "
                  f"routine with its distance matrices, {(dense['seconds'] - dense['distance_seconds']) / sparse['seconds']:.1f}x "
                  f"than the routine alone (medians); per round (same load): "
                  f"{', '.join(f'{d / s:.1f}x' for d, s in zip(dense['all_seconds'], sparse['all_seconds']))}")
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
