"""Does an untrained trunk already tell vehicle models apart? Leave-one-vehicle-out 1-NN on synthetic renders.

A probe set is a few vehicles of each of several catalogue models (by default the most common model of every body
type), each rendered from the same azimuths by randomly chosen cameras of the synthetic world. A trunk's pooled
output is scored by the share of images whose nearest neighbour (cosine), among images of *other* vehicles, shows
the same model: pixel likeness of the same vehicle does not count, shape shared between vehicles does.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class ProbeSet:
    """Images (N, 3, H, W) in 0..1, with the catalogue model id and the vehicle id of each."""

    images: torch.Tensor
    models: np.ndarray
    vehicles: np.ndarray

    @property
    def chance(self) -> float:
        """The expected accuracy of a random neighbour among other vehicles' images."""
        same = (self.models[:, None] == self.models[None, :]) & (self.vehicles[:, None] != self.vehicles[None, :])
        other = self.vehicles[:, None] != self.vehicles[None, :]
        return float((same.sum(1) / other.sum(1)).mean())


def probe_models(seed: int, preset: str, vehicles_per_model: int, candidates: int = 600) -> dict[int, list[int]]:
    """model id -> the first `vehicles_per_model` vehicle ids of it, for the most common model of every type."""
    from vreid.synth.catalog import CATALOG
    from vreid.synth.world import identity

    by_model: dict[int, list[int]] = defaultdict(list)
    for vehicle in range(1, candidates + 1):
        by_model[identity(seed, vehicle, preset).model_id].append(vehicle)
    best: dict[str, int] = {}  # body type -> its most common model
    for model_id, vehicles in sorted(by_model.items()):
        kind = CATALOG[model_id - 1].type_name
        if len(vehicles) >= vehicles_per_model and (kind not in best or len(vehicles) > len(by_model[best[kind]])):
            best[kind] = model_id
    return {m: by_model[m][:vehicles_per_model] for m in sorted(best.values())}


def render_probe_set(seed: int = 0, preset: str = "easy", vehicles_per_model: int = 4,
                     azimuths: tuple[float, ...] = (40.0, 140.0), render_size: int = 64,
                     input_size: int = 160, cameras: int = 8) -> ProbeSet:
    """Render the probe set; every image is resized to `input_size` square (ImageNet trunks like large inputs)."""
    from vreid.synth.world import render_vehicle

    rng = np.random.default_rng(seed)
    images, models, vehicles = [], [], []
    for model_id, ids in probe_models(seed, preset, vehicles_per_model).items():
        for vehicle in ids:
            for azimuth in azimuths:
                camera = int(rng.integers(1, cameras + 1))
                jitter = float(rng.uniform(-10.0, 10.0))
                img = render_vehicle(vehicle, azimuth + jitter, seed=seed, preset=preset, size=render_size,
                                     camera_id=camera).convert("RGB").resize((input_size, input_size))
                images.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1))
                models.append(model_id)
                vehicles.append(vehicle)
    return ProbeSet(torch.stack(images), np.array(models), np.array(vehicles))


@torch.no_grad()
def pooled_features(trunk: nn.Module, images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
                    batch_size: int = 32) -> torch.Tensor:
    """The trunk's globally average-pooled output (B, C) in eval mode, after normalising with mean/std."""
    trunk.eval()
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    out = [trunk.forward_features((images[i:i + batch_size] - m) / s) for i in range(0, len(images), batch_size)]
    feats = torch.cat(out)
    return feats.mean(dim=(2, 3)) if feats.ndim == 4 else feats[:, 0]


def knn_model_accuracy(features: torch.Tensor, probe: ProbeSet) -> float:
    """Share of images whose cosine nearest neighbour among other vehicles' images has the same model."""
    f = nn.functional.normalize(features.float(), dim=1)
    sim = f @ f.T
    sim[torch.from_numpy(probe.vehicles[:, None] == probe.vehicles[None, :])] = -float("inf")
    nearest = sim.argmax(dim=1).numpy()
    return float((probe.models[nearest] == probe.models).mean())
