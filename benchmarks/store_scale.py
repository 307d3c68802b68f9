"""Gallery stores at scale: build time, top-10 search latency (with and without a camera filter), reopen time,
disk size and peak memory of each engine, on clustered random 512-d float32 embeddings.

Each (engine, size) runs in its own subprocess (so the peak memory is its own, milvus-lite's server process
included) under a time limit; one that runs past it is reported as not measured.
    .venv/bin/python benchmarks/store_scale.py                                  # faiss and milvus, 100k and 1M
    .venv/bin/python benchmarks/store_scale.py --sizes 100000 --engines faiss --limit 300
Prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ENGINES = {"faiss": "{folder}/store", "milvus": "milvus://{folder}/store.db"}
CAMERAS = 20  # the filter keeps one camera: 1/20 of the gallery
CHUNK = 50_000  # rows per `add`, as `vreid index build` streams them


def tree_rss_mb() -> float:
    """Resident memory of this process and all its descendants (milvus-lite runs a server child), MB."""
    me, children = os.getpid(), {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(stat[1]), []).append((int(proc.name), int(stat[21])))
            except (OSError, IndexError, ValueError):
                pass
    total, todo = 0, [me]
    rss_me = int(Path("/proc/self/statm").read_text().split()[1])
    total += rss_me
    while todo:
        for pid, rss in children.get(todo.pop(), []):
            total += rss
            todo.append(pid)
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakSampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.stop = 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, tree_rss_mb())
            self.stop.wait(0.25)


def clustered(n: int, dim: int, seed: int, ids: int, start: int = 0):
    """Rows start..start+n of a gallery: unit noise around `ids` Gaussian centres (scale 2), float32."""
    import numpy as np

    centres = np.random.default_rng(seed).normal(size=(ids, dim)).astype(np.float32) * 2
    rng = np.random.default_rng(seed + 1 + start)
    labels = rng.integers(0, ids, n)
    return (rng.normal(size=(n, dim)).astype(np.float32) + centres[labels]), labels


def child(engine: str, n: int, dim: int, queries: int, folder: str) -> dict:
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from vreid.gallery.base import GalleryItem, StoreInfo
    from vreid.gallery.store import create_store, open_store

    sampler = PeakSampler()
    sampler.start()
    uri = ENGINES[engine].format(folder=folder)
    ids = max(1, n // 20)
    t0 = time.perf_counter()
    store = create_store(uri, StoreInfo(dim=dim, metric="euclidean"))
    for start in range(0, n, CHUNK):
        x, labels = clustered(min(CHUNK, n - start), dim, 0, ids, start)
        items = [GalleryItem(f"img/{start + i}.jpg", camera=int((start + i) % CAMERAS), time=float(start + i),
                             vehicle_id=int(v)) for i, v in enumerate(labels)]
        store.add(x, items)
        del x, items
    build_s = time.perf_counter() - t0
    store.close()
    t0 = time.perf_counter()
    store = open_store(uri)
    open_s = time.perf_counter() - t0
    q, _ = clustered(queries, dim, 0, ids, n + 10_000_000)

    def latency(**filters) -> float:
        store.search(q[:1], 10, **filters)  # warm
        times = []
        for row in q:
            t = time.perf_counter()
            hits = store.search(row[None], 10, **filters)
            times.append(time.perf_counter() - t)
            assert len(hits[0]) == 10
        return statistics.median(times) * 1000

    plain_ms = latency()
    camera_ms = latency(cameras=[3])
    stats = store.stats()
    store.close()
    sampler.stop.set()
    sampler.join()
    size = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
    return {"engine": engine, "n": n, "build_s": build_s, "open_s": open_s, "search_ms": plain_ms,
            "camera_ms": camera_ms, "disk_mb": size / 2**20, "peak_rss_mb": sampler.peak,
            "items": stats["items"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    ap.add_argument("--sizes", nargs="+", type=int, default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=50, help="single queries timed (median)")
    ap.add_argument("--limit", type=int, default=480, help="seconds per (engine, size) before it is abandoned")
    ap.add_argument("--child", nargs=3, metavar=("ENGINE", "N", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.dim, args.queries, args.child[2])))
        return
    rows = []
    for n in args.sizes:
        for engine in args.engines:
            folder = tempfile.mkdtemp(prefix=f"store-{engine}-")
            cmd = [sys.executable, __file__, "--child", engine, str(n), folder, "--dim", str(args.dim),
                   "--queries", str(args.queries)]
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    start_new_session=True)
            try:
                out, err = proc.communicate(timeout=args.limit)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)  # the whole session: milvus-lite's server too
                proc.communicate()
                _remove(folder)
                rows.append({"engine": engine, "n": n, "note": f"not measured: ran past {args.limit} s"})
                print(f"# {engine} {n}: not measured (over {args.limit} s)", file=sys.stderr, flush=True)
                continue
            _remove(folder)
            if proc.returncode != 0:
                rows.append({"engine": engine, "n": n, "note": f"failed: {err.strip().splitlines()[-1:]}"})
                continue
            row = json.loads(out.strip().splitlines()[-1])
            row["wall_s"] = time.perf_counter() - t0
            rows.append(row)
            print(f"# {json.dumps(row)}", file=sys.stderr, flush=True)
    print("| engine | gallery | build s | reopen s | top-10 ms | top-10 one camera ms | disk MB | peak RSS MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    names = {"faiss": "faiss + SQLite (folder)", "milvus": "milvus-lite (.db)"}
    for r in rows:
        if "note" in r:
            print(f"| {names[r['engine']]} | {r['n']:,} | {r['note']} | | | | | |")
        else:
            print(f"| {names[r['engine']]} | {r['n']:,} | {r['build_s']:.1f} | {r['open_s']:.2f} | "
                  f"{r['search_ms']:.1f} | {r['camera_ms']:.1f} | {r['disk_mb']:.0f} | {r['peak_rss_mb']:.0f} |")


def _remove(folder: str) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
