"""Embed images with a method, in batches, to float32 features on the CPU."""
from __future__ import annotations

from typing import Sequence

import torch

from vreid.config.schema import DataConfig
from vreid.data.records import ImageRecord
from vreid.methods import ReidMethod
from vreid.progress import track


@torch.no_grad()
def extract_features(
    method: ReidMethod,
    records: Sequence[ImageRecord],
    data_cfg: DataConfig,
    device: torch.device | str = "cpu",
    flip: bool = False,
    amp: bool = False,
) -> torch.Tensor:
    """(N, D) float32 CPU features in record order. `flip` averages with the horizontally flipped image."""
    from vreid.data import build_test_loader

    device = torch.device(device)
    was_training = method.training
    method.eval()
    feats = []
    loader = build_test_loader(list(records), data_cfg)
    for batch in track(loader, f"embedding {len(records)} images (batches)"):
        images = batch["images"].to(device, non_blocking=True)
        cams = batch["camera_ids"].to(device)
        views = batch["viewpoints"].to(device)
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            f = method.embed(images, cams, views).float()
            if flip:
                f = (f + method.embed(images.flip(3), cams, views).float()) / 2
        feats.append(f.cpu())
    method.train(was_training)
    if not feats:
        return torch.zeros(0, 0)
    return torch.cat(feats)
