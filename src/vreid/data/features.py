"""Training on extracted features instead of images: a table of feature rows, labels and each row's kNN list, and
the batches a features method trains on (probes with their neighbourhoods), resumable at any batch.

A batch: features (B, k+1, d) = [probe; its k neighbours by rank]; targets (B, k) float, 1 where the neighbour
shares the probe's label; labels (B,) the probes' class indices; indices (B,) the probes' rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

SPLITS = ("train", "query", "gallery")


def read_feature_file(path: str | Path, split: str) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(features, vehicle ids, camera ids) of one split of a `vreid extract` .npz file."""
    with np.load(path, allow_pickle=False) as f:
        key = f"{split}_features"
        if key not in f:
            raise KeyError(f"{path}: no {key} (extract it with `vreid extract ... --split {split}` or `--split all`)")
        return (torch.from_numpy(np.ascontiguousarray(f[key], dtype=np.float32)),
                np.asarray(f[f"{split}_vehicle_ids"]), np.asarray(f[f"{split}_camera_ids"]))


def neighbourhood_batch(features: torch.Tensor, labels: torch.Tensor, neighbours: torch.Tensor,
                        rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """The batch of probes `rows` (see the module docstring); `neighbours` (N, k) indices into `features`."""
    idx = neighbours[rows]
    tokens = torch.cat([features[rows].unsqueeze(1), features[idx]], 1)
    return {"features": tokens, "targets": (labels[idx] == labels[rows, None]).float(),
            "labels": labels[rows], "indices": rows}


@dataclass
class NeighbourhoodTable:
    """L2-normalised feature rows (N, d), class index per row (N,), each row's k nearest other rows (N, k)."""

    features: torch.Tensor
    labels: torch.Tensor
    neighbours: torch.Tensor

    @property
    def positive_fraction(self) -> float:
        return float((self.labels[self.neighbours] == self.labels[:, None]).float().mean())


class FeatureBatches:
    """One epoch of probe batches over a NeighbourhoodTable: a seeded permutation per epoch (the same after a
    resume), `batch_size` probes a batch, the last smaller one kept; starts at batch `start_batch`. In a process
    group each rank takes every world_size-th probe of each batch."""

    def __init__(self, table: NeighbourhoodTable, batch_size: int, seed: int, epoch: int, start_batch: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        self.table, self.batch_size, self.start_batch = table, batch_size, start_batch
        self.rank, self.world_size = rank, world_size
        self.order = torch.randperm(len(table.labels), generator=torch.Generator().manual_seed(seed * 100003 + epoch))

    @property
    def batches_per_epoch(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        t = self.table
        for b in range(self.start_batch, self.batches_per_epoch):
            rows = self.order[b * self.batch_size:(b + 1) * self.batch_size][self.rank::self.world_size]
            yield neighbourhood_batch(t.features, t.labels, t.neighbours, rows)
