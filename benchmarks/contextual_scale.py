"""Time and peak memory of the learned contextual re-ranker (vreid.rerank.contextual) against k-reciprocal,
both through vreid.eval.evaluate (re-ranking + the blocked metrics pass), on random clustered features.

Each (N, mode) runs in its own subprocess so that peak RSS belongs to it alone; a child past --timeout is
stopped and reported. N = Q + G with Q = N/6, and Q = 10,000 at N = 138,517 (as benchmarks/rerank_scale.py).
The network has random weights (its cost does not depend on them) at the sizes of configs/rerank_net/synthetic.yaml
(k = 20, D = 128, 2 layers, 8 heads, 8 slots) unless --width says otherwise.
    .venv/bin/python benchmarks/contextual_scale.py                     # contextual + kreciprocal at 12,000,
                                                                        # contextual at 138,517
    .venv/bin/python benchmarks/contextual_scale.py --sizes 138517 --modes kreciprocal
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PLAN = (("12000", "contextual"), ("12000", "kreciprocal"), ("138517", "contextual"))


def split_sizes(n: int) -> tuple[int, int]:
    q = 10000 if n == 138517 else n // 6
    return q, n - q


def child(mode: str, n: int, dim: int, width: int, threads: int) -> dict:
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from _measure import clustered_split, current_rss_mb, peak_rss_mb
    from vreid.eval import evaluate
    from vreid.models.contextual import ContextualNetConfig, ContextualRerankNet

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    q, g = split_sizes(n)
    qf, gf, q_ids, g_ids, q_cams, g_cams = clustered_split(q, g, dim, num_ids=max(1, g // 13), spread=0.6)
    options: dict = {}
    if mode == "contextual":
        options = {"model": ContextualRerankNet(ContextualNetConfig(in_dim=dim, k=20, dim=width)).eval()}
    base = current_rss_mb()
    out = {"mode": mode, "N": n, "Q": q, "G": g, "dim": dim, "width": width, "loadavg_start": os.getloadavg()[0]}
    t0 = time.perf_counter()
    res = evaluate(qf, gf, q_ids, g_ids, q_cams, g_cams, rerank=mode, rerank_options=options)
    out.update(seconds=time.perf_counter() - t0, peak_rss_mb=peak_rss_mb(), base_rss_mb=base,
               loadavg_end=os.getloadavg()[0], mAP=res.mAP, rank1=float(res.cmc[0]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="*", help="N values (default: the built-in plan)")
    ap.add_argument("--modes", nargs="*", default=["contextual", "kreciprocal"])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--width", type=int, default=128, help="the network's D")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=900, help="seconds one child may run")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.dim, args.width, args.threads)))
        return
    plan = [(n, m) for n in args.sizes for m in args.modes] if args.sizes else list(PLAN)
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    print("| N (Q + G) | dim | re-ranker | time (s) | peak RSS (MB) | above inputs (MB) | notes |\n"
          "| --- | --- | --- | --- | --- | --- | --- |", flush=True)
    for n, mode in plan:
        cmd = [sys.executable, __file__, "--child", mode, n, "--dim", str(args.dim), "--width", str(args.width),
               "--threads", str(args.threads)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(f"| {int(n):,} | {args.dim} | {mode} | > {args.timeout:.0f} | | | stopped at the time limit |")
            continue
        if proc.returncode != 0:
            print(f"| {int(n):,} | {args.dim} | {mode} | failed | | | "
                  f"{(proc.stderr.strip().splitlines() or ['failed'])[-1]} |")
            continue
        r = json.loads(proc.stdout)
        net = f"k = 20, D = {r['width']}, random weights; " if mode == "contextual" else "k1 = 20, k2 = 6; "
        print(f"| {r['N']:,} ({r['Q']:,} + {r['G']:,}) | {r['dim']} | {mode} + metrics | {r['seconds']:.1f} | "
              f"{r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] - r['base_rss_mb']:.0f} | {net}load "
              f"{r['loadavg_start']:.1f} -> {r['loadavg_end']:.1f}; mAP {100 * r['mAP']:.1f} |", flush=True)
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
