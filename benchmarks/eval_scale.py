"""Time and peak memory of vreid.eval at growing Q x G, against the bare chunked distance computation.

Each size runs in its own subprocess (peak RSS is its own): distances-only pass, evaluation, distances-only
pass again; the floor is the mean of the two distance passes.
    .venv/bin/python benchmarks/eval_scale.py                       # default sizes, up to 10,000 x 128,517
    .venv/bin/python benchmarks/eval_scale.py --sizes 1000x12000 --dim 512
    .venv/bin/python benchmarks/eval_scale.py --sizes 1678x11579 --processes 2   # gloo, gallery sharded

With --processes N the features are written once to a temporary folder; one process evaluates them, then N
gloo processes under torch.distributed.run do (vreid.eval.sharded: each loads its query and gallery share),
all with `--threads / N` torch threads and top-10 lists; rank 0's time and memory are shown, and the two
results are compared bit for bit.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_SIZES = ("1678x11579", "3000x38861", "10000x128517")  # VeRi-776 test, VeRi-Wild Small, VeRi-Wild Large


def child(q: int, g: int, dim: int, threads: int) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    from _measure import clustered_split

    split = clustered_split(q, g, dim, num_ids=max(1, g // 13), spread=0.35)
    return one_process_row(*split, threads=threads)[0]


def one_process_row(qf, gf, q_ids, g_ids, q_cams, g_cams, threads: int, top_k: int = 0) -> tuple[dict, object]:
    """The row of `vreid.eval.evaluate` in this process (the features already in memory), and its result."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from _measure import current_rss_mb, peak_rss_mb

    from vreid.eval import evaluate
    from vreid.eval.distance import FeatureDistances

    torch.set_num_threads(threads)
    base = current_rss_mb()
    res, timing = timed(FeatureDistances(qf, gf), lambda: evaluate(qf, gf, q_ids, g_ids, q_cams, g_cams,
                                                                   junk_rule="same_id_same_camera", top_k=top_k))
    row = {"Q": len(qf), "G": len(gf), "dim": qf.shape[1], "processes": 1, **timing, **summary(res),
           "peak_rss_mb": peak_rss_mb(), "base_rss_mb": base}
    return row, res


def timed(src, evaluation, chunk_size: int | None = None) -> tuple:
    """(result, timings): a distances-only pass over `src`'s query blocks, the evaluation, the pass again."""
    import torch

    from vreid.eval.distance import auto_chunk_size, iter_blocks

    q, cs = src.num_query, chunk_size or auto_chunk_size(src.num_gallery)
    buf = torch.empty(min(cs, q), src.num_gallery)

    def floor() -> float:  # the same blocks of distances, thrown away
        t = time.perf_counter()
        for s, e in iter_blocks(q, cs):
            src.block(s, e, out=buf[: e - s])
        return time.perf_counter() - t

    # floor, evaluation, floor again: on a shared machine both see the same load
    floors = [floor()]
    t0 = time.perf_counter()
    res = evaluation()
    seconds = time.perf_counter() - t0
    floors.append(floor())
    return res, {"seconds": seconds, "floor_seconds": sum(floors) / 2}


def summary(res) -> dict:
    return {"mAP": res.mAP, "rank1": float(res.cmc[0]), "mINP": res.mINP, "valid": res.num_valid_queries}


def save_result(res, path: Path) -> None:
    """Everything the exactness check compares."""
    np.savez(path, mAP=res.mAP, mINP=res.mINP, cmc=res.cmc, first=res.first_match_rank, ap=res.average_precision,
             indices=res.ranked_indices, distances=res.ranked_distances)


def write_child(q: int, g: int, dim: int, threads: int, folder: Path) -> dict:
    """Features to `folder` (for the processes to load their shares), then the one-process reference."""
    sys.path.insert(0, str(Path(__file__).parent))
    from _measure import clustered_split

    qf, gf, q_ids, g_ids, q_cams, g_cams = clustered_split(q, g, dim, num_ids=max(1, g // 13), spread=0.35)
    np.save(folder / "qf.npy", qf.numpy())
    np.save(folder / "gf.npy", gf.numpy())
    np.savez(folder / "labels.npz", q_ids=q_ids, g_ids=g_ids, q_cams=q_cams, g_cams=g_cams)
    row, res = one_process_row(qf, gf, q_ids, g_ids, q_cams, g_cams, threads=threads, top_k=10)
    save_result(res, folder / "one_process.npz")
    return row


def sharded_child(q: int, g: int, dim: int, threads: int, folder: Path) -> dict | None:
    """One process of the group: its shares in, the sharded evaluation; rank 0 returns the row."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from _measure import current_rss_mb, peak_rss_mb

    from vreid.engine.distributed import all_gather_uneven, barrier, current_dist
    from vreid.engine.sharded_eval import TorchCollectives
    from vreid.eval.distance import FeatureDistances, auto_chunk_size
    from vreid.eval.sharded import GALLERY_ALIGN, GalleryShard, evaluate_shards, shard_bounds

    torch.set_num_threads(threads)
    torch.distributed.init_process_group("gloo")
    info = current_dist()
    qa, qb = shard_bounds(q, info.world_size, info.rank)
    ga, gb = shard_bounds(g, info.world_size, info.rank, GALLERY_ALIGN)
    qf_share = torch.from_numpy(np.array(np.load(folder / "qf.npy", mmap_mode="r")[qa:qb]))
    gf_share = torch.from_numpy(np.array(np.load(folder / "gf.npy", mmap_mode="r")[ga:gb]))
    labels = np.load(folder / "labels.npz")
    base = current_rss_mb()
    qf = torch.cat(all_gather_uneven(qf_share, info))  # for the distances-only passes

    def evaluation():
        shard = GalleryShard(torch.cat(all_gather_uneven(qf_share, info)), gf_share, labels["g_ids"][ga:gb],
                             labels["g_cams"][ga:gb], ga)
        return evaluate_shards([shard], labels["q_ids"], labels["q_cams"], g, top_k=10,
                               collectives=TorchCollectives(info))

    barrier(info)
    res, timing = timed(FeatureDistances(qf, gf_share), evaluation, auto_chunk_size(g))  # the evaluation's blocks
    torch.distributed.destroy_process_group()
    if info.rank:
        return None
    save_result(res, folder / "sharded.npz")
    return {"Q": q, "G": g, "dim": dim, "processes": info.world_size, **timing, **summary(res),
            "peak_rss_mb": peak_rss_mb(), "base_rss_mb": base}


def same_results(folder: Path) -> bool:
    """Whether the sharded result equals the one-process one in every number and list, bit for bit."""
    one, many = np.load(folder / "one_process.npz"), np.load(folder / "sharded.npz")
    return all(np.array_equal(one[k], many[k], equal_nan=True) for k in one.files)


def print_row(e: dict) -> None:
    print(f"| {e['Q']:,} x {e['G']:,} | {e['dim']} | {e['processes']} | {e['floor_seconds']:.1f} | "
          f"{e['seconds']:.1f} | {e['seconds'] / e['floor_seconds']:.2f} | {e['peak_rss_mb']:.0f} | "
          f"{e['peak_rss_mb'] - e['base_rss_mb']:.0f} | {100 * e['mAP']:.1f} | {100 * e['rank1']:.1f} | "
          f"{100 * e['mINP']:.1f} |", flush=True)


def run_processes(q: str, g: str, args) -> list[dict]:
    """The one-process reference and the `args.processes`-process run of one size, on the same features."""
    import socket
    import tempfile

    threads = max(1, args.threads // args.processes)
    with tempfile.TemporaryDirectory() as tmp:
        common = [q, g, "--dim", str(args.dim), "--threads", str(threads), "--features", tmp]
        one = subprocess.run([sys.executable, __file__, "--child", "write", *common], check=True,
                             capture_output=True, text=True).stdout
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        many = subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.processes}",
                               f"--master_port={port}", __file__, "--child", "sharded", *common], check=True,
                              capture_output=True, text=True).stdout
        rows = [json.loads(one), json.loads([line for line in many.splitlines() if line.startswith("{")][0])]
        rows[1]["same_as_one_process"] = same_results(Path(tmp))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="*", default=list(DEFAULT_SIZES), help="QxG")
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--processes", type=int, default=1, help="gloo processes sharing the gallery")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--features", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mode, q, g = args.child
        if mode == "write":
            row = write_child(int(q), int(g), args.dim, args.threads, Path(args.features))
        elif mode == "sharded":
            row = sharded_child(int(q), int(g), args.dim, args.threads, Path(args.features))
        else:
            row = child(int(q), int(g), args.dim, args.threads)
        if row is not None:
            print(json.dumps(row))
        return
    rows = []
    columns = ("Q x G", "dim", "processes", "distances only (s, mean of 2)", "vreid.eval (s)", "ratio",
               "peak RSS eval (MB)", "above inputs (MB)", "mAP", "R-1", "mINP")
    print(f"| {' | '.join(columns)} |\n|{' --- |' * len(columns)}", flush=True)
    for size in args.sizes:
        q, g = size.lower().split("x")
        if args.processes > 1:
            found = run_processes(q, g, args)
        else:
            cmd = [sys.executable, __file__, "--child", "eval", q, g, "--dim", str(args.dim),
                   "--threads", str(args.threads)]
            found = [json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)]
        for e in found:
            print_row(e)
        rows += found
    for e in rows:
        if "same_as_one_process" in e:
            print(f"{e['Q']:,} x {e['G']:,}: {e['processes']} processes equal 1 process bit for bit (mAP, mINP, CMC, "
                  f"per-query AP and first ranks, top-10 lists): {'yes' if e['same_as_one_process'] else 'NO'}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
