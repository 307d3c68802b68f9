"""Parameter counts and retrieval feature sizes of the named MBR architectures (configs/mbr/archs/*.yaml).

Models are built on the `meta` device (no memory, no weights), at full size: ResNet-50-IBN-a trunk, 256x256
input, 576 training identities (VeRi-776). Prints a Markdown table (docs/methods/lbs.md holds a copy).

    python benchmarks/mbr_params.py [--backbone resnet50_ibn_a] [--classes 576] [--size 256]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["baseline", "r50-2b", "mbr-4b", "hybrid-4b", "mbr-4g", "mbr-2g", "mbr-2x2g", "mbr-r50-2x2g", "mbr-bot-4g"]


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def measure(config: Path, backbone: str, classes: int, size: int, cameras: int, views: int) -> dict:
    from vreid.config import load_experiment
    from vreid.methods import DataInfo, build_method

    cfg = load_experiment(config, [f"model.backbone.name={backbone}", "model.backbone.pretrained=null"]).model
    info = DataInfo(num_classes=classes, num_cameras=cameras, num_viewpoints=views, height=size, width=size)
    with torch.device("meta"):
        method = build_method(cfg, info)
        cfg.metadata, cfg.metadata_cameras, cfg.metadata_viewpoints = "camera+viewpoint", cameras, views
        with_meta = build_method(cfg, info)
    classifiers = sum(count(h.classifier) for h in method.heads if h.classifier is not None)
    total = count(method)
    return {
        "name": config.stem, "branches": " + ".join(s.kind for s in cfg.branches),
        "embeddings": len(method.embedding_dims), "dims": method.embedding_dims,
        "feature": sum(method.embedding_dims), "trunk": count(method.backbone),
        "branch_params": count(method.branches), "total": total, "inference": total - classifiers,
        "lai": with_meta.metadata_parameters(),
        "losses": " / ".join("+".join(k for k, w in (("CE", s.ce), ("Tri", s.triplet)) if w > 0)
                             for b in cfg.branches for s in b.embeddings),
    }


def table(rows: list[dict]) -> str:
    m = lambda n: f"{n / 1e6:.2f} M"  # noqa: E731
    lines = ["| architecture | branches | losses per embedding | embeddings | feature size | trunk | branches "
             "| total (with classifiers) | inference (no classifiers) | + LAI (cam x view) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        dims = f"{r['embeddings']} x {r['dims'][0]}"
        lines.append(f"| {r['name']} | {r['branches']} | {r['losses']} | {dims} | {r['feature']} | {m(r['trunk'])} "
                     f"| {m(r['branch_params'])} | {m(r['total'])} | {m(r['inference'])} | {m(r['lai'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet50_ibn_a")
    parser.add_argument("--classes", type=int, default=576, help="training identities (VeRi-776: 576)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--cameras", type=int, default=20, help="LAI camera rows (VeRi-776: 20)")
    parser.add_argument("--views", type=int, default=8, help="LAI viewpoint rows (VeRi-776: 8)")
    args = parser.parse_args(argv)
    folder = ROOT / "configs" / "mbr" / "archs"
    configs = [folder / f"{n}.yaml" for n in ORDER if (folder / f"{n}.yaml").is_file()]
    configs += sorted(p for p in folder.glob("*.yaml") if p.stem not in ORDER)
    rows = [measure(c, args.backbone, args.classes, args.size, args.cameras, args.views) for c in configs]
    print(f"backbone {args.backbone}, {args.size}x{args.size}, {args.classes} classes\n")
    print(table(rows))


if __name__ == "__main__":
    main()
