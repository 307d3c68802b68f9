"""How far apart a trunk's pooled features lie at the start of training: for each config, the mean norm and the
median pairwise Euclidean distance of its trunk's pooled features over the first training images (the scale the
batch-hard triplet sees before any step; docs/methods/bot.md, "The triplet's feature on MobileNetV2").

    python benchmarks/probes/feature_scale.py --data runs/leaderboard/data-crossview-160ids-8cams-64px-seed0
"""
from __future__ import annotations

import argparse

import torch

DEFAULT_CONFIGS = "configs/bot/synthetic.yaml,configs/bot/synthetic-scratch.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a veri776-layout dataset (the leaderboard's world)")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma-separated experiment configs")
    parser.add_argument("--images", type=int, default=64)
    args = parser.parse_args()

    from vreid.config import load_experiment
    from vreid.data.images import open_rgb
    from vreid.data.transforms import build_test_transform
    from vreid.engine.run import load_data
    from vreid.methods import DataInfo, build_method

    print("| config | trunk | feature | mean norm | median pairwise distance |\n| --- | --- | ---: | ---: | ---: |")
    for path in args.configs.split(","):
        torch.manual_seed(0)
        cfg = load_experiment(path, [f"data.root={args.data}"])
        dataset = load_data(cfg)
        method = build_method(cfg.model, DataInfo(num_classes=len({r.vehicle_id for r in dataset.train}),
                                                  height=cfg.data.height, width=cfg.data.width)).eval()
        transform = build_test_transform(cfg.data)
        x = torch.stack([transform(open_rgb(r.path)) for r in dataset.train[:args.images]])
        with torch.no_grad():
            f = method.backbone(x)
            f = f.mean((2, 3)) if f.dim() == 4 else f
        print(f"| `{path}` | {cfg.model.backbone.name} | {f.shape[1]} | {f.norm(dim=1).mean():.1f} | "
              f"{torch.cdist(f, f).median():.1f} |")


if __name__ == "__main__":
    main()
