"""Time and peak memory of vreid.eval at growing Q x G, against the bare chunked distance computation.

Each size runs in its own subprocess (peak RSS is its own): distances-only pass, evaluation, distances-only
pass again; the floor is the mean of the two distance passes.
    .venv/bin/python benchmarks/eval_scale.py                       # default sizes, up to 10,000 x 128,517
    .venv/bin/python benchmarks/eval_scale.py --sizes 1000x12000 --dim 512
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_SIZES = ("1678x11579", "3000x38861", "10000x128517")  # VeRi-776 test, VeRi-Wild Small, VeRi-Wild Large


def child(mode: str, q: int, g: int, dim: int, threads: int) -> dict:
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from _measure import clustered_split, current_rss_mb, peak_rss_mb

    from vreid.eval import evaluate
    from vreid.eval.distance import FeatureDistances, auto_chunk_size, iter_blocks

    torch.set_num_threads(threads)
    qf, gf, q_ids, g_ids, q_cams, g_cams = clustered_split(q, g, dim, num_ids=max(1, g // 13), spread=0.35)
    base = current_rss_mb()
    out = {"Q": q, "G": g, "dim": dim}
    src = FeatureDistances(qf, gf)
    cs = auto_chunk_size(g)
    buf = torch.empty(min(cs, q), g)

    def floor() -> float:  # the same blocks of distances, thrown away
        t = time.perf_counter()
        for s, e in iter_blocks(q, cs):
            src.block(s, e, out=buf[: e - s])
        return time.perf_counter() - t

    # floor, evaluation, floor again: on a shared machine both see the same load
    floors = [floor()]
    t0 = time.perf_counter()
    res = evaluate(qf, gf, q_ids, g_ids, q_cams, g_cams, junk_rule="same_id_same_camera")
    out["seconds"] = time.perf_counter() - t0
    floors.append(floor())
    out.update(floor_seconds=sum(floors) / 2, mAP=res.mAP, rank1=float(res.cmc[0]), mINP=res.mINP,
               valid=res.num_valid_queries, peak_rss_mb=peak_rss_mb(), base_rss_mb=base)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="*", default=list(DEFAULT_SIZES), help="QxG")
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mode, q, g = args.child
        print(json.dumps(child(mode, int(q), int(g), args.dim, args.threads)))
        return
    rows = []
    print(f"| Q x G | dim | distances only (s, mean of 2) | vreid.eval (s) | ratio | peak RSS eval (MB) | above inputs (MB) "
          f"| mAP | R-1 | mINP |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    for size in args.sizes:
        q, g = size.lower().split("x")
        cmd = [sys.executable, __file__, "--child", "eval", q, g, "--dim", str(args.dim),
               "--threads", str(args.threads)]
        e = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        rows.append(e)
        print(f"| {int(q):,} x {int(g):,} | {args.dim} | {e['floor_seconds']:.1f} | {e['seconds']:.1f} | "
              f"{e['seconds'] / e['floor_seconds']:.2f} | {e['peak_rss_mb']:.0f} | {e['peak_rss_mb'] - e['base_rss_mb']:.0f} "
              f"| {100 * e['mAP']:.1f} | {100 * e['rank1']:.1f} | {100 * e['mINP']:.1f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
