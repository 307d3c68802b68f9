"""The viewpoint predictor of VAPC: a small CNN over viewpoint bins, trained on the viewpoint labels a dataset
has (VeRi-776 orientation files, the synthetic world's side file), frozen, then applied to unlabelled images
(hard arg-max + softmax confidence). Or the predictions come from a user's `viewpoint_labels.csv`.

Viewpoint labels are identity-agnostic: training on them reads no vehicle id (ids only split off the held-out
vehicles the accuracy is measured on).
"""
from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from vreid.config.loader import ConfigError, FieldError, bounds, choices
from vreid.config.schema import DataConfig
from vreid.data.dataset import ImageDataset, collate_batch
from vreid.data.records import VIEWPOINT_NAMES, ImageRecord
from vreid.data.transforms import SeededTransform, build_test_transform, build_train_transform
from vreid.models.backbones.config import BackboneConfig, build_backbone
from vreid.progress import track
from vreid.registry import Registry


@dataclass(frozen=True)
class ViewpointBins:
    """Coarse viewpoint classes: their names, and the bin of each VeRi-776 orientation (VIEWPOINT_NAMES order)."""

    names: tuple[str, ...]
    of_orientation: tuple[int, ...]

    def __post_init__(self) -> None:
        fits = set(self.of_orientation) <= set(range(len(self.names)))
        if len(self.of_orientation) != len(VIEWPOINT_NAMES) or not fits:
            raise ValueError(f"viewpoint bins {self.names}: need one bin per orientation {VIEWPOINT_NAMES}")

    def __len__(self) -> int:
        return len(self.names)

    def of(self, viewpoint: int | None) -> int:
        """The bin of an orientation index, -1 for None."""
        return -1 if viewpoint is None else self.of_orientation[viewpoint]


#: name -> bins. Orientation order: front, rear, left, left_front, left_rear, right, right_front, right_rear.
VIEWPOINT_BINS: Registry[ViewpointBins] = Registry("viewpoint bins")
VIEWPOINT_BINS.register("eight")(ViewpointBins(VIEWPOINT_NAMES, tuple(range(8))))
VIEWPOINT_BINS.register("five")(ViewpointBins(("front", "front_side", "side", "rear_side", "rear"),
                                              (0, 4, 2, 1, 3, 2, 1, 3)))
VIEWPOINT_BINS.register("three")(ViewpointBins(("front", "side", "rear"), (0, 2, 1, 0, 2, 1, 0, 2)))
VIEWPOINT_BINS.register("one")(ViewpointBins(("any",), (0,) * 8))


def _bin_registry() -> Registry:
    return VIEWPOINT_BINS


@dataclass
class ViewpointSource:
    """A labelled dataset whose viewpoint labels train the predictor (ids never read); root "" = the run's own
    training images."""

    root: str = ""
    layout: str = "veri776"


@dataclass
class ViewpointPredictorConfig:
    """The classifier (backbone + GAP + linear over the bins), its training, and where labels come from."""

    bins: str = field(default="five", metadata=choices(registry=_bin_registry))
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(name="resnet_tiny_ibn_a"))
    epochs: int = field(default=4, metadata=bounds(1))
    lr: float = field(default=1e-3, metadata=bounds(above=0))
    weight_decay: float = field(default=5e-4, metadata=bounds(0))
    batch_size: int = field(default=64, metadata=bounds(1))
    holdout: float = field(default=0.2, metadata=bounds(0, 0.9))   # share of labelled vehicles for the accuracy
    source: ViewpointSource = field(default_factory=ViewpointSource)
    #: a CSV (path,viewpoint) of predictions for the training images: no classifier is trained
    labels_csv: str = ""
    #: images predicted with a lower softmax confidence are left out of clustering
    min_confidence: float = field(default=0.0, metadata=bounds(0, 1))

    @property
    def view_bins(self) -> ViewpointBins:
        return VIEWPOINT_BINS.get(self.bins)

    def validate(self) -> None:
        if self.labels_csv and self.source.root:
            raise FieldError("labels_csv", "give either viewpoint.labels_csv (predictions) or viewpoint.source.root "
                                           "(labels to train on), not both")


class ViewpointClassifier(nn.Module):
    """backbone -> global average pooling -> linear over the bins."""

    def __init__(self, backbone: BackboneConfig, num_bins: int) -> None:
        super().__init__()
        self.backbone = build_backbone(backbone)
        self.head = nn.Linear(self.backbone.num_features, num_bins)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_features(images).mean((2, 3)))


@dataclass
class ViewpointPredictions:
    """Per image: the predicted bin (-1 = left out: unknown or under min_confidence) and its confidence."""

    bins: np.ndarray
    confidence: np.ndarray

    def kept(self, min_confidence: float) -> np.ndarray:
        return np.where(self.confidence >= min_confidence, self.bins, -1)


def holdout_split(records: Sequence[ImageRecord], share: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) positions among `records`: a `share` of the vehicles, drawn at random, is held out."""
    vids = sorted({r.vehicle_id for r in records})
    rng = np.random.default_rng([seed, 0x71E])
    held = set(rng.choice(vids, size=int(round(share * len(vids))), replace=False).tolist()) if share > 0 else set()
    train = [i for i, r in enumerate(records) if r.vehicle_id not in held]
    return train, [i for i, r in enumerate(records) if r.vehicle_id in held]


def _loader(records, labels, transform, batch: int, workers: int, seed: int | None) -> DataLoader:
    ds = ImageDataset(records, labels, SeededTransform(transform))
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(ds, batch_size=batch, shuffle=seed is not None, generator=gen, num_workers=workers,
                      collate_fn=collate_batch)


def train_viewpoint_classifier(records: Sequence[ImageRecord], cfg: ViewpointPredictorConfig, data: DataConfig,
                               device: torch.device | str = "cpu", seed: int = 0
                               ) -> tuple[ViewpointClassifier, dict[str, Any]]:
    """Train on the records that have a viewpoint (a held-out share of vehicles excluded), freeze, and report the
    held-out accuracy. No horizontal flip: it would turn left into right."""
    bins = cfg.view_bins
    labelled = [r for r in records if r.viewpoint is not None]
    if len(labelled) < 2:
        raise ConfigError(f"key 'model.viewpoint.source': {len(labelled)} of {len(records)} images have a viewpoint "
                          "label; give a dataset with viewpoint labels (viewpoint.source.root) or predictions "
                          "(viewpoint.labels_csv)", key="model.viewpoint.source")
    train_pos, held_pos = holdout_split(labelled, cfg.holdout, seed)
    device = torch.device(device)
    torch.manual_seed(seed)
    model = ViewpointClassifier(cfg.backbone, len(bins)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    no_flip = dataclasses.replace(data, transforms=dataclasses.replace(data.transforms, flip_prob=0.0))
    train = [labelled[i] for i in train_pos]
    targets = [bins.of(r.viewpoint) for r in train]
    model.train()
    for epoch in range(cfg.epochs):
        loader = _loader(train, targets, build_train_transform(no_flip), cfg.batch_size, data.workers, seed + epoch)
        for batch in track(loader, f"viewpoint classifier, epoch {epoch + 1}/{cfg.epochs}"):
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                loss = F.cross_entropy(model(batch["images"].to(device)).float(), batch["labels"].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval().requires_grad_(False)
    report: dict[str, Any] = {"bins": list(bins.names), "labelled_images": len(labelled), "fit_images": len(train),
                              "heldout_images": len(held_pos), "epochs": cfg.epochs,
                              "backbone": cfg.backbone.name}
    if held_pos:
        held = [labelled[i] for i in held_pos]
        report.update(accuracy_report(predict_viewpoints(model, held, data, device), held, bins, "heldout"))
    return model, report


@torch.no_grad()
def predict_viewpoints(model: ViewpointClassifier, records: Sequence[ImageRecord], data: DataConfig,
                       device: torch.device | str = "cpu") -> ViewpointPredictions:
    device = torch.device(device)
    bins, conf = [], []
    for batch in _loader(list(records), None, build_test_transform(data), data.test_batch_size, data.workers, None):
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            p = model(batch["images"].to(device)).float().softmax(1)
        c, b = p.max(1)
        bins.append(b.cpu())
        conf.append(c.cpu())
    if not bins:
        return ViewpointPredictions(np.zeros(0, np.int64), np.zeros(0, np.float32))
    return ViewpointPredictions(torch.cat(bins).numpy().astype(np.int64), torch.cat(conf).numpy())


def accuracy_report(pred: ViewpointPredictions, records: Sequence[ImageRecord], bins: ViewpointBins,
                    name: str) -> dict[str, Any]:
    """`<name>_accuracy` over the records with a label, and the confusion matrix (rows: true bin)."""
    truth = np.array([bins.of(r.viewpoint) for r in records], np.int64)
    has = truth >= 0
    confusion = np.zeros((len(bins), len(bins)), np.int64)
    np.add.at(confusion, (truth[has], pred.bins[has]), 1)
    acc = float((truth[has] == pred.bins[has]).mean()) if has.any() else float("nan")
    return {f"{name}_accuracy": round(acc, 4), f"{name}_labelled": int(has.sum()),
            f"{name}_confusion": confusion.tolist()}


def read_viewpoint_labels(path: str | Path, records: Sequence[ImageRecord], root: str | Path,
                          bins: ViewpointBins) -> ViewpointPredictions:
    """Predictions from a CSV with columns path,viewpoint: viewpoint an orientation name or index (VIEWPOINT_NAMES)
    or a bin name; path absolute or relative to the dataset root. Every training image must be listed."""
    path = Path(path)
    key = "model.viewpoint.labels_csv"
    if not path.is_file():
        raise ConfigError(f"key '{key}': {path} does not exist; give a CSV with columns path,viewpoint", key=key)
    given: dict[str, int] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"path", "viewpoint"} <= set(reader.fieldnames):
            raise ConfigError(f"key '{key}': {path} needs the header path,viewpoint (found {reader.fieldnames})",
                              key=key)
        for line, row in enumerate(reader, start=2):
            b = _bin_of_text(row["viewpoint"].strip(), bins)
            if b is None:
                raise ConfigError(f"key '{key}': {path} line {line}: viewpoint {row['viewpoint']!r} is not one of "
                                  f"{', '.join(VIEWPOINT_NAMES)}, 0..{len(VIEWPOINT_NAMES) - 1} or the bins "
                                  f"{', '.join(bins.names)}", key=key)
            p = Path(row["path"].strip())
            given[str(p if p.is_absolute() else Path(root) / p)] = b
    out = np.array([given.get(str(Path(r.path)), -2) for r in records], np.int64)
    if (out == -2).any():
        missing = [records[i].path for i in np.flatnonzero(out == -2)[:3]]
        raise ConfigError(f"key '{key}': {path} lists no viewpoint for {(out == -2).sum()} training images (e.g. "
                          f"{', '.join(missing)})", key=key)
    return ViewpointPredictions(out, np.ones(len(out), np.float32))


def _bin_of_text(text: str, bins: ViewpointBins) -> int | None:
    name = text.lower().replace("-", "_").replace(" ", "_")
    if name in bins.names:
        return bins.names.index(name)
    if name.isdigit() and int(name) < len(VIEWPOINT_NAMES):
        return bins.of(int(name))
    return bins.of(VIEWPOINT_NAMES.index(name)) if name in VIEWPOINT_NAMES else None
