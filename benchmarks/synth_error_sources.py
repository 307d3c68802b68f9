"""Where a trained model fails on the synthetic world: viewpoint change vs look-alike vehicles.

For a trained run (a `vreid train` output folder) and its synthetic dataset, prints:
- mAP when only positives seen from a similar side count (|azimuth difference| <= 45 deg; the others are
  left out like junk), against mAP when only positives seen from a different side count (>= 90 deg);
- what the wrong Rank-1 matches share with the query: same model and colour (a look-alike), same colour only,
  neither; and how often the wrong match is seen from the query's side while the best-ranked true match is not.

    python benchmarks/synth_error_sources.py --run runs/leaderboard/bot-hard \
        --data runs/leaderboard/data-hard-160ids-8cams-64px-seed0
"""
from __future__ import annotations

import argparse

import numpy as np


def angle_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.abs(a - b) % 360.0
    return np.minimum(d, 360.0 - d)


def average_precision(dist_row: np.ndarray, positive: np.ndarray, valid: np.ndarray) -> float | None:
    """AP of one query over the valid gallery items (stable order on ties)."""
    if not positive[valid].any():
        return None
    order = np.argsort(np.where(valid, dist_row, np.inf), kind="stable")[: valid.sum()]
    hits = positive[order]
    ranks = np.flatnonzero(hits) + 1
    return float(np.mean(np.arange(1, len(ranks) + 1) / ranks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()

    from vreid.config import load_experiment
    from vreid.engine.bundle import load_bundle
    from vreid.engine.extract import extract_features
    from vreid.engine.run import load_data

    cfg = load_experiment(None, [f"data.root={args.data}", f"data.height={args.size}", f"data.width={args.size}",
                                 "data.workers=0"])
    ds = load_data(cfg)
    method = load_bundle(args.run)
    qf = extract_features(method, ds.query, cfg.data).numpy()
    gf = extract_features(method, ds.gallery, cfg.data).numpy()
    dist = (qf ** 2).sum(1)[:, None] + (gf ** 2).sum(1)[None] - 2 * qf @ gf.T
    q_ids = np.array([r.vehicle_id for r in ds.query])
    g_ids = np.array([r.vehicle_id for r in ds.gallery])
    q_cam = np.array([r.camera_id for r in ds.query])
    g_cam = np.array([r.camera_id for r in ds.gallery])
    q_az = np.array([r.azimuth for r in ds.query], dtype=float)
    g_az = np.array([r.azimuth for r in ds.gallery], dtype=float)
    q_mc = [(r.model_id, r.color_id) for r in ds.query]
    g_mc = [(r.model_id, r.color_id) for r in ds.gallery]

    same_view, other_view, wrong = [], [], {"same model and colour": 0, "same colour only": 0, "neither": 0}
    failures = 0
    wrong_same_side = 0   # the wrong Rank-1 match is seen from the query's side (<= 45 deg)
    truth_other_side = 0  # the best-ranked true match is seen from another side (>= 90 deg)
    for i in range(len(ds.query)):
        junk = (g_ids == q_ids[i]) & (g_cam == q_cam[i])
        pos = g_ids == q_ids[i]
        diff = angle_diff(g_az, q_az[i])
        for keep, out in ((diff <= 45, same_view), (diff >= 90, other_view)):
            valid = ~junk & (~pos | keep)
            ap = average_precision(dist[i], pos & keep, valid)
            if ap is not None:
                out.append(ap)
        valid = ~junk
        top = np.argsort(np.where(valid, dist[i], np.inf), kind="stable")[0]
        if g_ids[top] != q_ids[i]:
            failures += 1
            order = np.argsort(np.where(valid, dist[i], np.inf), kind="stable")
            first_true = order[np.flatnonzero(g_ids[order] == q_ids[i])[:1]]
            wrong_same_side += int(angle_diff(g_az[top], q_az[i]) <= 45)
            truth_other_side += int(len(first_true) > 0 and angle_diff(g_az[first_true[0]], q_az[i]) >= 90)
            if g_mc[top] == q_mc[i]:
                wrong["same model and colour"] += 1
            elif g_mc[top][1] == q_mc[i][1]:
                wrong["same colour only"] += 1
            else:
                wrong["neither"] += 1

    print("| positives counted | queries | mAP (%) |")
    print("| --- | ---: | ---: |")
    print(f"| seen from a similar side (<= 45 deg apart) | {len(same_view)} | {100 * np.mean(same_view):.1f} |")
    print(f"| seen from another side (>= 90 deg apart) | {len(other_view)} | {100 * np.mean(other_view):.1f} |")
    print()
    print(f"| wrong Rank-1 match (of {failures} failures among {len(ds.query)} queries) | share (%) |")
    print("| --- | ---: |")
    for k, v in wrong.items():
        print(f"| {k} | {100 * v / max(failures, 1):.1f} |")
    print(f"| the wrong match is seen from the query's side (<= 45 deg) | {100 * wrong_same_side / max(failures, 1):.1f} |")
    print(f"| the best-ranked true match is seen from another side (>= 90 deg) | "
          f"{100 * truth_other_side / max(failures, 1):.1f} |")


if __name__ == "__main__":
    main()
