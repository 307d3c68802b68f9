"""Extraction throughput, eager PyTorch against onnxruntime, for a `bot/synthetic`-sized model (resnet18_ibn_a,
last stride 1), on the same PIL images, end to end (each backend's own preprocessing included).

Each size is exported with `vreid export onnx` (so the parity check runs and its numbers are printed), then both
embedders embed the same images in turns; the best of `--repeats` rounds is kept (on a shared machine the minimum
is the closest to the cost on idle cores). Prints a markdown table.

    python benchmarks/extract_speed.py                      # 64 and 128 px, batch 32 and 1, 1 thread, best of 5
    python benchmarks/extract_speed.py --sizes 128 --threads 2 --images 128
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch


def make_run(folder: Path, size: int, data_root: Path) -> Path:
    """A run folder of an untrained bot/synthetic-sized model (speed does not depend on the weights)."""
    from vreid.config import load_experiment
    from vreid.engine.bundle import save_bundle
    from vreid.engine.run_info import write_run_info
    from vreid.methods import DataInfo, build_method

    cfg = load_experiment(None, ["model.name=bot", "model.backbone.name=resnet18_ibn_a",
                                 "model.backbone.pretrained=null", "model.backbone.last_stride=1",
                                 f"data.height={size}", f"data.width={size}", f"data.root={data_root}",
                                 f"output_dir={folder}"])
    torch.manual_seed(0)
    method = build_method(cfg.model, DataInfo(num_classes=100, height=size, width=size)).eval()
    save_bundle(folder, method)
    write_run_info(folder, cfg, cfg.seed)
    return folder


def throughput(embedders: dict, images: list, batch: int, repeats: int) -> dict[str, float]:
    """Images per second of each embedder at `batch`, best of `repeats` rounds run in turns."""
    best = {name: float("inf") for name in embedders}
    for _ in range(repeats + 1):  # the first round warms up (allocations, onnxruntime's first run)
        for name, e in embedders.items():
            e.batch_size = batch
            t0 = time.perf_counter()
            e.embed(images)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: len(images) / s for name, s in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 1])
    parser.add_argument("--images", type=int, default=64, help="images per round at batch > 1")
    parser.add_argument("--images-batch1", type=int, default=16, help="images per round at batch 1")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for both backends")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from vreid.data.images import open_rgb
    from vreid.export.parity import find_images
    from vreid.export.to_onnx import export_onnx
    from vreid.gallery.embedders import OnnxEmbedder, TorchEmbedder
    from vreid.synth import SynthConfig, render_dataset

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="vreid-extract-speed-") as tmp:
        world = Path(tmp) / "world"
        render_dataset(world, SynthConfig(ids=16, cameras=4, seed=0, size=max(args.sizes), workers=1))
        images = [open_rgb(p) for p in find_images(world, max(args.images, args.images_batch1))]
        for size in args.sizes:
            run = make_run(Path(tmp) / f"run{size}", size, world)
            report = export_onnx(run, Path(tmp) / f"bot{size}.onnx", log=lambda line: None)
            embedders = {"torch": TorchEmbedder.from_run(run),
                         "onnx": OnnxEmbedder(report.path, threads=args.threads)}
            for batch in args.batches:
                n = args.images if batch > 1 else args.images_batch1
                speed = throughput(embedders, images[:n], batch, args.repeats)
                rows.append((size, batch, speed["torch"], speed["onnx"], report.max_abs_diff, report.min_cosine))

    print(f"resnet18_ibn_a bot (last stride 1), {platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s), best of {args.repeats}; {time.perf_counter() - start:.0f} s in all\n")
    print("| input | batch | eager torch (img/s) | onnxruntime (img/s) | onnx / torch | parity max abs diff | "
          "parity min cosine |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for size, batch, t, o, diff, cos in rows:
        print(f"| {size}x{size} | {batch} | {t:.1f} | {o:.1f} | {o / t:.2f}x | {diff:.2g} | {cos:.7f} |")


if __name__ == "__main__":
    main()
