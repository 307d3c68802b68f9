"""Load test of `vreid serve` on loopback: searches/s and latency at a large gallery while another client adds.

A folder store (faiss + SQLite) is filled with random embeddings (inserted directly, no model), served by the
real app (vreid.serve.app) under uvicorn in a child process; queries are small PNGs whose embedding is a fixed
random vector per image colour (a fake embedder), so the numbers measure HTTP + upload checks + store search.
Bounded: each phase stops after --duration seconds or --max-requests searches, whichever comes first.
    .venv/bin/python benchmarks/serve_load.py                         # 100,000 x 256, 4 search clients, 20 s/phase
    .venv/bin/python benchmarks/serve_load.py --gallery 10000 --duration 5 --clients 2
Phases: "search only", then "search while adding" (one more client adds images, one request at a time).
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

QUERY_COLOURS = 16


class ColourKeyedEmbedder:
    """A fixed random unit vector per image mean colour: no model runs, the query side costs ~nothing."""

    metric = "euclidean"

    def __init__(self, dim: int, seed: int = 1) -> None:
        self.dim, self.seed, self.model = dim, seed, {"fake": "colour-keyed random vectors"}

    def embed(self, images, cameras=None, viewpoints=None):
        out = []
        for im in images:
            key = int(np.asarray(im, np.uint8).reshape(-1, 3).mean(0).sum())
            v = np.random.default_rng((self.seed, key)).standard_normal(self.dim).astype(np.float32)
            out.append(v / np.linalg.norm(v))
        return np.stack(out)


def png(colour: tuple[int, int, int], size: int = 64) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def fill_store(folder: Path, n: int, dim: int, cameras: int, seed: int = 0) -> float:
    """A new store of n random unit embeddings with random camera and time; returns the seconds it took."""
    from vreid.gallery.base import GalleryItem, StoreInfo
    from vreid.gallery.store import create_store

    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    store = create_store(str(folder), StoreInfo(dim=dim, metric="euclidean", model={"fake": "random"}))
    chunk = 20_000
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = rng.standard_normal((m, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        items = [GalleryItem(path=f"/bench/{start + i}.jpg", camera=int(c), time=float(t), vehicle_id=None)
                 for i, (c, t) in enumerate(zip(rng.integers(0, cameras, m), rng.uniform(0, 86400, m)))]
        store.add(x, items)
    store.close()
    return time.perf_counter() - t0


def serve_child(folder: str, dim: int, uploads: str) -> None:
    """Child process: the app over the store on a free loopback port; prints 'port N', serves until killed."""
    import socket

    import uvicorn

    from vreid.gallery.store import open_store
    from vreid.serve.app import create_app

    store = open_store(folder)
    app = create_app(store, ColourKeyedEmbedder(dim), upload_dir=uploads)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    print(f"port {sock.getsockname()[1]}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run_phase(base: str, clients: int, duration: float, max_requests: int, top: int, adding: bool,
              cameras: int) -> dict:
    import httpx

    queries = [png((17 * k % 256, 101 * k % 256, 53 * k % 256)) for k in range(QUERY_COLOURS)]
    lock = threading.Lock()
    latencies: list[float] = []
    add_latencies: list[float] = []
    errors = {"search": 0, "add": 0}
    stop = threading.Event()
    issued = [0]
    deadline = time.perf_counter() + duration

    def searcher(k: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            j = 0
            while not stop.is_set() and time.perf_counter() < deadline:
                with lock:
                    if issued[0] >= max_requests:
                        break
                    issued[0] += 1
                params = {"top": top}
                if j % 4 == 3:  # every fourth search filters: two cameras, half the day
                    params.update(cameras=f"{j % cameras},{(j + 1) % cameras}", after=0, before=43200)
                t0 = time.perf_counter()
                r = http.post("/api/search", params=params,
                              files={"image": ("q.png", queries[(k + j) % len(queries)], "image/png")})
                dt = time.perf_counter() - t0
                with lock:
                    if r.status_code == 200:
                        latencies.append(dt)
                    else:
                        errors["search"] += 1
                j += 1

    def adder() -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            j = 0
            while not stop.is_set() and time.perf_counter() < deadline:
                t0 = time.perf_counter()
                r = http.post("/api/gallery", params={"camera": j % cameras, "time": 1000.0 + j},
                              files={"image": ("a.png", png((j % 256, (j // 256) % 256, 7)), "image/png")})
                dt = time.perf_counter() - t0
                with lock:
                    if r.status_code == 200:
                        add_latencies.append(dt)
                    else:
                        errors["add"] += 1
                j += 1

    threads = [threading.Thread(target=searcher, args=(k,)) for k in range(clients)]
    if adding:
        threads.append(threading.Thread(target=adder))
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    searchers = threads[:clients]
    for t in searchers:
        t.join()
    elapsed = time.perf_counter() - t0
    stop.set()
    for t in threads[clients:]:
        t.join()
    return {"searches": len(latencies), "elapsed": elapsed, "rate": len(latencies) / elapsed,
            "p50": percentile(latencies, 50) * 1e3, "p95": percentile(latencies, 95) * 1e3,
            "adds": len(add_latencies), "add_p50": percentile(add_latencies, 50) * 1e3, "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gallery", type=int, default=100_000, help="random embeddings in the store")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--cameras", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4, help="concurrent search clients")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase (at most)")
    parser.add_argument("--max-requests", type=int, default=20_000, help="searches per phase (at most)")
    parser.add_argument("--threads", type=int, default=1, help="OMP threads of the server (faiss)")
    parser.add_argument("--_serve", nargs=3, metavar=("STORE", "DIM", "UPLOADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._serve:
        serve_child(args._serve[0], int(args._serve[1]), args._serve[2])
        return

    with tempfile.TemporaryDirectory(prefix="vreid-serve-load-") as tmp:
        folder = Path(tmp) / "store"
        fill_s = fill_store(folder, args.gallery, args.dim, args.cameras)
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        child = subprocess.Popen([sys.executable, __file__, "--_serve", str(folder), str(args.dim),
                                  str(Path(tmp) / "uploads")], stdout=subprocess.PIPE, text=True, env=env)
        try:
            line = child.stdout.readline() if child.stdout else ""
            if not line.startswith("port "):
                raise SystemExit(f"the server did not start (it printed {line!r})")
            base = f"http://127.0.0.1:{int(line.split()[1])}"
            import httpx

            for _ in range(100):  # wait for the first answer
                try:
                    if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            rows = [("search only", run_phase(base, args.clients, args.duration, args.max_requests, args.top,
                                              False, args.cameras)),
                    ("search while adding", run_phase(base, args.clients, args.duration, args.max_requests,
                                                      args.top, True, args.cameras))]
            final = httpx.get(f"{base}/api/stats", timeout=30).json()["items"]
        finally:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    print(f"gallery {args.gallery:,} x {args.dim} (euclidean, folder store: faiss flat + SQLite; filled in "
          f"{fill_s:.1f} s), {args.clients} search clients, top {args.top}, every 4th search filtered by 2 cameras "
          f"and a time window; server OMP threads {args.threads}; {os.cpu_count()} CPUs visible; "
          f"{final:,} items at the end\n")
    print("| phase | searches | searches/s | p50 ms | p95 ms | adds | adds/s | add p50 ms | errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, r in rows:
        adds = f"{r['adds']}" if r["adds"] else "-"
        rate = f"{r['adds'] / r['elapsed']:.1f}" if r["adds"] else "-"
        add_p50 = f"{r['add_p50']:.1f}" if r["adds"] else "-"
        errs = ", ".join(f"{k} {v}" for k, v in r["errors"].items() if v) or "0"
        print(f"| {name} | {r['searches']} | {r['rate']:.1f} | {r['p50']:.1f} | {r['p95']:.1f} | {adds} | {rate} | "
              f"{add_p50} | {errs} |")


if __name__ == "__main__":
    main()
