"""Rendering speed of the synthetic world: images per second for a few image sizes and worker counts.

    python benchmarks/synth_speed.py                 # ~1,000-image worlds, sizes 64/128/192, 1 and 2 workers
    python benchmarks/synth_speed.py --big           # adds the 10,000-image, 192 px world (target: < 2 min)

Times the whole `render_dataset` call (plan, render, JPEG, write, lists), into a temporary folder.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from vreid.synth import SynthConfig, render_dataset


def run_case(ids: int, size: int, workers: int, preset: str, cameras: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="vreid-synth-speed-"))
    try:
        cpu0 = _cpu()
        t0 = time.perf_counter()
        s = render_dataset(tmp / "data", SynthConfig(ids=ids, cameras=cameras, size=size, workers=workers,
                                                     preset=preset, layout="veri776"))
        seconds = time.perf_counter() - t0
        cpu = _cpu() - cpu0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"ids": ids, "size": size, "workers": workers, "images": s["rendered"], "seconds": seconds,
            "rate": s["rendered"] / seconds, "cpu_rate": s["rendered"] / cpu}


def _cpu() -> float:
    """User+system CPU seconds of this process and its finished workers (unaffected by other load)."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", type=int, default=80, help="vehicles per small world (~13 images each)")
    ap.add_argument("--sizes", default="64,128,192")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--preset", default="hard")
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--big", action="store_true", help="also render ~10,000 images of 192 px with 2 workers")
    args = ap.parse_args(argv)
    cases = [(args.ids, int(s), int(w)) for s in args.sizes.split(",") for w in args.workers.split(",")]
    if args.big:
        cases.append((830, 192, 2))  # ~10,100 images
    print(f"cpu cores: {os.cpu_count()}, preset {args.preset}, {args.cameras} cameras, layout veri776")
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    print("| ids | size | workers | images | seconds | images/s (wall) | images per CPU-second |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for ids, size, workers in cases:
        r = run_case(ids, size, workers, args.preset, args.cameras)
        print(f"| {r['ids']} | {r['size']} | {r['workers']} | {r['images']} | {r['seconds']:.1f} | {r['rate']:.0f} | "
              f"{r['cpu_rate']:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
