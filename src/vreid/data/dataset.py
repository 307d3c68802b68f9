"""Torch dataset over ImageRecords, the batch contract, and the train/test DataLoader builders.

Batch contract (what `collate_batch` returns and every method consumes): a dict of tensors
`images` (B,3,H,W) float, and (B,) int64 `labels` (class index or pseudo-label; -1 = none), `vehicle_ids`,
`camera_ids` (the record's camera id, or its `camera_map` index), `viewpoints` (-1 where unknown), `indices`
(position of the image in the record list given to the dataset).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from vreid.config.schema import DataConfig
from vreid.data.errors import DatasetError, Problem
from vreid.data.images import open_rgb, unreadable_image
from vreid.data.records import ImageRecord, ReidDataset
from vreid.data.sampler import IdentityBatchSampler
from vreid.data.transforms import SeededTransform, build_train_transform, build_test_transform

BATCH_KEYS = ("images", "labels", "vehicle_ids", "camera_ids", "viewpoints", "indices")


def camera_index(records: Sequence[ImageRecord]) -> dict[int, int]:
    """Camera id -> contiguous index 0..n-1 (sorted by id), for embedding tables; len() = number of cameras."""
    return {cam: i for i, cam in enumerate(sorted({r.camera_id for r in records}))}


class ImageDataset(Dataset):
    """Records as samples. `dataset[i]` or `dataset[(i, seed)]` (seeded augmentation) -> dict of one sample.

    `labels` defaults to -1 for every record; `camera_map` (see `camera_index`) maps camera ids to indices,
    otherwise the record's camera id is passed through.
    """

    def __init__(self, records: Sequence[ImageRecord], labels: Sequence[int] | None = None,
                 transform: Callable | None = None, camera_map: dict[int, int] | None = None) -> None:
        self.records = list(records)
        self.labels = [int(x) for x in labels] if labels is not None else [-1] * len(self.records)
        if len(self.labels) != len(self.records):
            raise ValueError(f"{len(self.labels)} labels for {len(self.records)} records")
        self.transform = transform if isinstance(transform, SeededTransform) or transform is None \
            else SeededTransform(transform)
        self.camera_map = camera_map

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = (item if isinstance(item, tuple) else (item, None))
        r = self.records[index]
        try:
            image = open_rgb(r.path)
        except Exception as e:  # PIL raises many types for broken or oversized files
            raise DatasetError([unreadable_image(r.path, e)]) from None
        if self.transform is not None:
            image = self.transform(image, seed)
        cam = self.camera_map[r.camera_id] if self.camera_map is not None else r.camera_id
        return {"image": image, "label": self.labels[index], "vehicle_id": r.vehicle_id, "camera_id": cam,
                "viewpoint": r.viewpoint if r.viewpoint is not None else -1, "index": index}


def collate_batch(samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack samples into the batch contract (plural key names, int64 metadata)."""
    def ints(key: str) -> torch.Tensor:
        return torch.tensor([s[key] for s in samples], dtype=torch.long)

    return {"images": torch.stack([s["image"] for s in samples]), "labels": ints("label"),
            "vehicle_ids": ints("vehicle_id"), "camera_ids": ints("camera_id"), "viewpoints": ints("viewpoint"),
            "indices": ints("index")}


def _loader_kwargs(workers: int) -> dict[str, Any]:
    kw: dict[str, Any] = {"num_workers": workers, "collate_fn": collate_batch, "pin_memory": torch.cuda.is_available()}
    if workers > 0:
        kw["persistent_workers"] = True
    return kw


def build_train_loader(records: Sequence[ImageRecord], labels: Sequence[int], cfg: DataConfig, seed: int = 0,
                       epoch: int = 0, start_batch: int = 0, rank: int = 0, world_size: int = 1,
                       camera_map: dict[int, int] | None = None) -> DataLoader:
    """P x K identity batches of augmented images for one epoch, this rank's share, from batch `start_batch`.

    `loader.batch_sampler` is the IdentityBatchSampler: `batches_per_epoch` is this rank's full-epoch count;
    to reuse the loader for the next epoch call `loader.batch_sampler.set_epoch(e)` before iterating.
    """
    sampler = IdentityBatchSampler(labels, cfg.ids_per_batch, cfg.images_per_id, seed=seed, epoch=epoch,
                                   rank=rank, world_size=world_size, start_batch=start_batch)
    ds = ImageDataset(records, labels, SeededTransform(build_train_transform(cfg)), camera_map)
    return DataLoader(ds, batch_sampler=sampler, **_loader_kwargs(cfg.workers))


def build_test_loader(records: Sequence[ImageRecord], cfg: DataConfig,
                      camera_map: dict[int, int] | None = None) -> DataLoader:
    """Records in order, resized and normalised, `cfg.test_batch_size` per batch; labels are -1."""
    ds = ImageDataset(records, None, SeededTransform(build_test_transform(cfg)), camera_map)
    return DataLoader(ds, batch_size=cfg.test_batch_size, shuffle=False, drop_last=False,
                      **_loader_kwargs(cfg.workers))


def load_dataset(cfg: DataConfig, verify: bool = True) -> ReidDataset:
    """Parse `cfg.root` as `cfg.layout`; raise DatasetError with every problem if it is broken.

    `verify` also checks that every image exists, no required split is empty and every query vehicle is in the
    gallery (image readability is left to `vreid data check`, which opens every file).
    """
    from vreid.data.check import inspect_dataset
    from vreid.data.layouts import LAYOUTS

    if not cfg.root:
        raise DatasetError([Problem(file="data.root", message="no dataset root given",
                                    fix="set data.root=/path/to/dataset (and data.layout)")])
    if not verify:
        return LAYOUTS.get(cfg.layout).load(cfg.root, cfg.test_size)
    ds, problems = inspect_dataset(cfg.root, cfg.layout, cfg.test_size, verify_images=False)
    if problems:
        raise DatasetError(problems, ds.root)
    return ds
