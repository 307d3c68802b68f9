"""Label sources: who gives the training identities. A source is refreshed before every epoch by
`vreid.engine.label_source_hook.LabelSourceHook` and returns `TrainLabels`: the class of every training record
that the trainer's P x K sampler draws from (-1 = left out this epoch) and, per model of the method, the labels
that model learns.

Sources are registered by name in `LABEL_SOURCES`; a method picks one with a config key (`usl`: `model.labels`).
Every public module of `vreid.unsup` is imported on the first lookup, so a source registers itself where it is
defined (`vreid.unsup.vapc` registers `viewpoint_progressive`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, TypeVar

import numpy as np
import torch
from rich.console import Console
from torch import nn

from vreid.data.records import relabel
from vreid.registry import Registry
from vreid.unsup.clustering import ClusteringConfig, NeighbourGraph, cluster_stats
from vreid.unsup.cotrain import random_derangement
from vreid.unsup.sampling import disjoint_partitions, neighbourhood_sample
from vreid.unsup.schedules import EpsSchedule

console = Console(stderr=True)
T = TypeVar("T")


@dataclass
class TrainLabels:
    """What a source gives for one epoch.

    labels: one class index per training record for the sampler (0..C-1, -1 = left out this epoch).
    per_model: per model of the method, its own label per training record (-1 = that model does not train on the
        record); handed to `method.set_pseudo_labels(b, per_model[b], features[b], subset)`. Empty: the method
        learns `labels` only (what the batch's "labels" hold).
    features: per model, the features the source computed for the `subset` records (row i = record subset[i]);
        methods build their cluster centroids from them.
    subset: the training record indices the feature rows belong to (ascending).
    report_rows: rows appended to the run's clusters.csv (empty: nothing written this epoch).
    """

    labels: np.ndarray
    per_model: list[np.ndarray] = field(default_factory=list)
    features: list[torch.Tensor] = field(default_factory=list)
    subset: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    report_rows: list[dict[str, Any]] = field(default_factory=list)

    def check(self, num_records: int) -> None:
        """Raise ValueError when the shapes do not fit `num_records` training records (a source's bug)."""
        if len(self.labels) != num_records or any(len(p) != num_records for p in self.per_model):
            raise ValueError(f"a label source gave labels for {len(self.labels)} records (per model: "
                             f"{[len(p) for p in self.per_model]}); the training split has {num_records}")
        if self.per_model and len(self.features) != len(self.per_model):
            raise ValueError(f"a label source gave {len(self.per_model)} label sets but {len(self.features)} "
                             "feature sets; give one feature tensor per model")
        if any(f.shape[0] != len(self.subset) for f in self.features):
            raise ValueError("a label source's feature rows must match its subset, one row per subset record")


@dataclass
class LabelContext:
    """What a source gets at each refresh.

    trainer: the running Trainer (its dataset, config, device, `dist`); read-only for a source.
    method: the method being trained; its config is also the source's `cfg`.
    epoch: the 0-based epoch about to start; epochs: the run's schedule.epochs.
    models: one module per model of the method, the ones to extract clustering features with (`method.label_models`).
    online: the trained module of each model (the same objects as `models` when the method clusters with them).
    rng: this epoch's generator, a pure function of (seed, epoch): a resumed run draws the same numbers.
    """

    trainer: Any              # the running vreid.engine.trainer.Trainer
    method: nn.Module
    epoch: int
    epochs: int
    models: Sequence[nn.Module]
    online: Sequence[nn.Module]
    rng: np.random.Generator

    @property
    def num_records(self) -> int:
        return len(self.trainer.dataset.train)

    def extract(self, module: nn.Module, indices: np.ndarray) -> torch.Tensor:
        """Features of the training records `indices` from `module` (its `embed`), in that order; the engine's
        context (`vreid.engine.label_source_hook.TrainerLabelContext`) extracts them with the trainer's settings."""
        raise NotImplementedError

    def true_ids(self, indices: np.ndarray) -> np.ndarray:
        """True vehicle ids of records `indices`: for report rows only, never for training labels."""
        return np.array([self.trainer.dataset.train[i].vehicle_id for i in indices], np.int64)


class LabelSource:
    """Base class. Built as `cls(method_cfg)`: a source reads the fields it needs from its method's config.

    `refresh` runs before every epoch and returns `TrainLabels`; `state_dict`/`load_state_dict` carry whatever the
    next refresh needs (a sampled neighbourhood, a window start) across a resume.
    """

    def __init__(self, cfg: Any = None) -> None:
        self.cfg = cfg

    def refresh(self, ctx: LabelContext) -> TrainLabels:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


LABEL_SOURCES: Registry[type[LabelSource]] = Registry("label source", plugins="vreid.unsup")


def label_source_names() -> Registry[type[LabelSource]]:
    """For config fields: `field(default=..., metadata=choices(registry=label_source_names))`."""
    return LABEL_SOURCES


def build_label_source(name: str, cfg: Any = None) -> LabelSource:
    return LABEL_SOURCES.get(name)(cfg)


@LABEL_SOURCES.register("dataset")
class DatasetLabels(LabelSource):
    """The dataset's own ids (what supervised training uses): every model learns them on every record; features
    of all records from each model, for methods that build centroids."""

    def refresh(self, ctx: LabelContext) -> TrainLabels:
        labels = np.asarray(relabel(ctx.trainer.dataset.train)[0], np.int64)
        subset = np.arange(ctx.num_records)
        return TrainLabels(labels=labels, per_model=[labels.copy() for _ in ctx.models],
                           features=[ctx.extract(m, subset) for m in ctx.models], subset=subset)


def joint_labels(assigned: list[np.ndarray], images: str = "union") -> np.ndarray:
    """One class per combination of the models' assigned labels, so every P x K batch is consistent under each
    model's own labels. "union" (the paper: each model trains on the inliers of the labels it learns from)
    keeps an image some model has a label for, -1 counting as a value of the combination; the models without
    a label for it leave it out of their losses. "intersection" keeps only images every model has a label for."""
    stack = np.stack(assigned, 1)
    out = np.full(len(stack), -1, np.int64)
    keep = (stack >= 0).any(1) if images == "union" else (stack >= 0).all(1)
    if keep.any():
        out[keep] = np.unique(stack[keep], axis=0, return_inverse=True)[1].reshape(-1)
    return out


def loosen_eps(attempt: Callable[[float], tuple[T, int]], eps: float, need: int, who: str) -> tuple[T, float]:
    """`attempt(eps)` -> (labels, number of classes); while that is fewer than `need` (data.ids_per_batch: one
    P x K batch), loosen eps by 0.05 up to 0.95 and try again. Returns the last labels and their eps; a
    ConfigError naming data.ids_per_batch when even eps 0.95 gives too few classes."""
    while True:
        result, found = attempt(eps)
        if found >= need or eps >= 0.95:
            break
        eps = round(eps + 0.05, 4)
        console.print(f"[yellow]{who}: fewer than {need} clusters; eps raised to {eps}[/yellow]")
    if found < need:
        from vreid.config.loader import ConfigError

        raise ConfigError(f"key 'data.ids_per_batch': {who} clustering found {found} clusters, fewer than "
                          f"data.ids_per_batch={need}; lower data.ids_per_batch or model.clustering.min_samples",
                          key="data.ids_per_batch")
    return result, eps


class ClusteringSettings(Protocol):
    """The method-config fields the clustering sources read (`usl`'s UslConfig has them all)."""

    clustering: ClusteringConfig
    eps: EpsSchedule
    schedule_epochs: int | None          # E of the eps schedule; None: the run's schedule.epochs
    neighborhood_fraction: float
    sampling: str                        # "anchor" | "partition"
    resample_every: int
    cotrain: str                         # "derangement" | "own" (read by `cotrain`)
    cotrain_images: str                  # "union" | "intersection"


@LABEL_SOURCES.register("clustering")
class ClusteringLabels(LabelSource):
    """Each model's features clustered (sparse DBSCAN, eps from the schedule), optionally on a local
    neighbourhood of the data redrawn every `resample_every` epochs; each model learns its own clusters, the
    sampler draws one class per combination of the models' labels (`joint_labels`). Too few classes for a
    P x K batch: eps is loosened in steps of 0.05 (logged in clusters.csv)."""

    cfg: ClusteringSettings

    def __init__(self, cfg: ClusteringSettings) -> None:
        super().__init__(cfg)
        self.subset: np.ndarray | None = None
        self.partitions: list[np.ndarray] = []
        self.window_start = 0

    def permutation(self, models: int, rng: np.random.Generator) -> np.ndarray:
        """Whose clusters each model learns: model b learns those of model perm[b]."""
        return np.arange(models)

    def _choose_subset(self, ctx: LabelContext) -> tuple[np.ndarray, dict[int, torch.Tensor]]:
        """The records to cluster this epoch, and features already extracted for them (model -> rows)."""
        cfg, n = self.cfg, ctx.num_records
        cached: dict[int, torch.Tensor] = {}
        if cfg.neighborhood_fraction >= 1.0:
            return np.arange(n), cached
        if self.subset is None or ctx.epoch - self.window_start >= cfg.resample_every:
            b = int(ctx.rng.integers(len(ctx.online)))
            feats = ctx.extract(ctx.online[b], np.arange(n))   # online model, whole set
            if cfg.sampling == "anchor":
                self.partitions = [neighbourhood_sample(feats, cfg.neighborhood_fraction, int(ctx.rng.integers(n)))]
            else:
                self.partitions = disjoint_partitions(feats, cfg.neighborhood_fraction, ctx.rng)
            self.window_start = ctx.epoch
            if ctx.models[b] is ctx.online[b]:
                cached[b] = feats
        self.subset = np.sort(self.partitions[(ctx.epoch - self.window_start) % len(self.partitions)])
        return self.subset, {b: f[torch.from_numpy(self.subset)] for b, f in cached.items()}

    def refresh(self, ctx: LabelContext) -> TrainLabels:
        cfg, n = self.cfg, ctx.num_records
        t = ctx.epoch + 1
        subset, cached = self._choose_subset(ctx)
        feats = [cached[b] if b in cached else ctx.extract(m, subset) for b, m in enumerate(ctx.models)]
        eps = cfg.eps(t, cfg.schedule_epochs or ctx.epochs)
        graphs = [NeighbourGraph.build(f, cfg.clustering) for f in feats]   # one graph per model, for every eps

        def attempt(eps: float):   # -> ((labels per model, permutation, assigned per model, joint), classes)
            labels = [g.cluster(eps) for g in graphs]
            perm = self.permutation(len(feats), ctx.rng)
            assigned = []
            for b in range(len(feats)):
                full = np.full(n, -1, np.int64)
                full[subset] = labels[perm[b]]
                assigned.append(full)
            joint = joint_labels(assigned, cfg.cotrain_images)
            return (labels, perm, assigned, joint), int(joint.max()) + 1

        (labels, perm, assigned, joint), eps = loosen_eps(attempt, eps, ctx.trainer.cfg.data.ids_per_batch,
                                                          ctx.method.cfg.name)
        true_ids, in_loader = ctx.true_ids(subset), joint >= 0
        rows = [{"epoch": t, "backbone": b, "eps": round(eps, 4), **cluster_stats(labels[b], true_ids).as_row(),
                 "learns_from": int(perm[b]), "trained_images": int((in_loader & (assigned[b] >= 0)).sum()),
                 "loader_images": int(in_loader.sum()), "trained_classes": int(joint.max() + 1)}
                for b in range(len(feats))]
        return TrainLabels(labels=joint, per_model=assigned, features=feats, subset=subset, report_rows=rows)

    def state_dict(self) -> dict[str, Any]:
        return {"subset": None if self.subset is None else torch.from_numpy(self.subset),
                "partitions": [torch.from_numpy(p) for p in self.partitions], "window_start": self.window_start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.subset = None if state["subset"] is None else state["subset"].numpy()
        self.partitions = [p.numpy() for p in state["partitions"]]
        self.window_start = int(state["window_start"])


@LABEL_SOURCES.register("cotrain")
class CotrainLabels(ClusteringLabels):
    """`clustering`, with the labels permuted between the co-trained models: a random derangement drawn at every
    refresh (`cotrain: derangement`, the paper; one model learns its own), or none (`cotrain: own`)."""

    def permutation(self, models: int, rng: np.random.Generator) -> np.ndarray:
        if self.cfg.cotrain == "derangement":
            return random_derangement(models, rng)
        return super().permutation(models, rng)
