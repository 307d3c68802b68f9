"""Calibrate the synthetic presets: how well colour alone (an HSV histogram) and a random ranking do on each.

    python benchmarks/synth_difficulty.py --ids 200 --cameras 8 --size 128 --seed 0

Renders one veri776-layout world per preset (into --out, reused if present), ranks the gallery for every query
by colour-histogram distance, and prints mAP / Rank-1 under the VeRi-776 rule (gallery images of the query's id
AND camera are excluded).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from vreid.synth import SynthConfig, render_dataset
from vreid.synth.baselines import color_histogram_features


def read_split(root: Path, names_file: str, folder: str) -> tuple[list[Path], np.ndarray, np.ndarray]:
    names = [x for x in (root / names_file).read_text().splitlines() if x]
    ids = np.array([int(n.split("_")[0]) for n in names])
    cams = np.array([int(n.split("_")[1][1:]) for n in names])
    return [root / folder / n for n in names], ids, cams


def cmc_map(dist: np.ndarray, q_ids, g_ids, q_cams, g_cams, max_rank: int = 10) -> tuple[float, np.ndarray]:
    """Exact mAP and CMC with the VeRi-776 rule; queries without a valid match are skipped."""
    aps, cmc, n = [], np.zeros(max_rank), 0
    for i in range(len(q_ids)):
        keep = ~((g_ids == q_ids[i]) & (g_cams == q_cams[i]))
        order = np.argsort(dist[i][keep], kind="stable")
        match = (g_ids[keep] == q_ids[i])[order]
        if not match.any():
            continue
        n += 1
        hits = np.flatnonzero(match)
        cmc[hits[0]:] += 1 if hits[0] < max_rank else 0
        aps.append(np.mean((np.arange(len(hits)) + 1) / (hits + 1)))
    return float(np.mean(aps)), cmc / max(1, n)


def evaluate_world(root: Path, seed: int) -> dict:
    q_paths, q_ids, q_cams = read_split(root, "name_query.txt", "image_query")
    g_paths, g_ids, g_cams = read_split(root, "name_test.txt", "image_test")
    qf, gf = color_histogram_features(q_paths), color_histogram_features(g_paths)
    dist = ((qf[:, None, :] - gf[None, :, :]) ** 2).sum(-1)  # small worlds: the full matrix is fine here
    hist_map, hist_cmc = cmc_map(dist, q_ids, g_ids, q_cams, g_cams)
    rng = np.random.default_rng(seed)
    rand = [cmc_map(rng.random(dist.shape), q_ids, g_ids, q_cams, g_cams) for _ in range(5)]
    return {"queries": len(q_paths), "gallery": len(g_paths), "hist_map": hist_map, "hist_r1": hist_cmc[0],
            "hist_r5": hist_cmc[4], "rand_map": float(np.mean([r[0] for r in rand])),
            "rand_r1": float(np.mean([r[1][0] for r in rand]))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", type=int, default=200)
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--presets", default="easy,medium,hard")
    ap.add_argument("--out", default="runs/synth-difficulty")
    args = ap.parse_args(argv)
    rows = []
    for preset in args.presets.split(","):
        root = Path(args.out) / f"{preset}-{args.ids}ids-{args.cameras}cams-{args.size}px-seed{args.seed}"
        if not (root / "vreid_labels.csv").is_file():
            render_dataset(root, SynthConfig(ids=args.ids, cameras=args.cameras, seed=args.seed, preset=preset,
                                             size=args.size, layout="veri776", workers=args.workers))
        n_images = sum(1 for _ in (root / "vreid_labels.csv").open()) - 1
        rows.append((preset, n_images, evaluate_world(root, args.seed)))
    print(f"command: python benchmarks/synth_difficulty.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print("| preset | images | queries | gallery | colour-hist mAP | colour-hist R1 | colour-hist R5 "
          "| random mAP | random R1 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for preset, n, r in rows:
        print(f"| {preset} | {n} | {r['queries']} | {r['gallery']} | {100 * r['hist_map']:.1f} | "
              f"{100 * r['hist_r1']:.1f} | {100 * r['hist_r5']:.1f} | {100 * r['rand_map']:.1f} | "
              f"{100 * r['rand_r1']:.1f} |")


if __name__ == "__main__":
    main()
