"""The pseudo-label hook of the `usl` method: before every epoch, (re)sample a neighbourhood, cluster each
backbone's features, draw the co-training derangement, reset the cluster memories and hand labels to the trainer.
After every step it moves the EMA teachers. True vehicle ids are read only to write `clusters.csv` (a report)."""
from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.console import Console

from vreid.engine.extract import extract_features
from vreid.engine.hooks import Hook
from vreid.engine.momentum import ema_update_
from vreid.fileio import write_text_atomic
from vreid.unsup.clustering import cluster_features, cluster_stats
from vreid.unsup.cotrain import random_derangement
from vreid.unsup.sampling import disjoint_partitions, neighbourhood_sample

if TYPE_CHECKING:
    from vreid.methods.usl import UnsupervisedReid

console = Console(stderr=True)
CSV_FIELDS = ["epoch", "backbone", "eps", "images", "clusters", "outliers", "purity", "true_ids", "learns_from",
              "trained_images", "loader_images", "trained_classes"]


def joint_labels(assigned: list[np.ndarray], images: str = "union") -> np.ndarray:
    """One class per combination of the backbones' assigned labels, so every P x K batch is consistent under each
    backbone's own labels. "union" (the paper: each backbone trains on the inliers of the labels it learns from)
    keeps an image some backbone has a label for, -1 counting as a value of the combination; the backbones without
    a label for it leave it out of their losses. "intersection" keeps only images every backbone has a label for."""
    stack = np.stack(assigned, 1)
    out = np.full(len(stack), -1, np.int64)
    keep = (stack >= 0).any(1) if images == "union" else (stack >= 0).all(1)
    if keep.any():
        out[keep] = np.unique(stack[keep], axis=0, return_inverse=True)[1].reshape(-1)
    return out


class UslPipelineHook(Hook):
    priority = 10  # labels must be in place before any other hook sees the epoch

    def __init__(self, method: "UnsupervisedReid") -> None:
        self.method = method
        self.subset: np.ndarray | None = None
        self.partitions: list[np.ndarray] = []
        self.window_start = 0
        self.rows: list[dict[str, Any]] = []

    # ----- the pipeline iteration -------------------------------------------------------------------------
    def _extract(self, trainer, module, indices: np.ndarray) -> torch.Tensor:
        records = [trainer.dataset.train[i] for i in indices]
        return extract_features(module, records, trainer.cfg.data, trainer.device, amp=trainer.amp)

    def _choose_subset(self, trainer, rng: np.random.Generator) -> tuple[np.ndarray, dict[int, torch.Tensor]]:
        cfg, n = self.method.cfg, len(trainer.dataset.train)
        cached: dict[int, torch.Tensor] = {}
        if cfg.neighborhood_fraction >= 1.0:
            return np.arange(n), cached
        epoch = trainer.epoch
        if self.subset is None or epoch - self.window_start >= cfg.resample_every:
            b = int(rng.integers(len(self.method.encoders)))
            feats = self._extract(trainer, self.method.encoders[b], np.arange(n))   # online model, whole set
            if cfg.sampling == "anchor":
                self.partitions = [neighbourhood_sample(feats, cfg.neighborhood_fraction, int(rng.integers(n)))]
            else:
                self.partitions = disjoint_partitions(feats, cfg.neighborhood_fraction, rng)
            self.window_start = epoch
            if cfg.cluster_with == "online":
                cached[b] = feats
        part = self.partitions[(epoch - self.window_start) % len(self.partitions)]
        self.subset = np.sort(part)
        return self.subset, {b: f[torch.from_numpy(self.subset)] for b, f in cached.items()}

    def before_epoch(self, trainer) -> None:
        m, cfg = self.method, self.method.cfg
        rng = np.random.default_rng([trainer.cfg.seed, trainer.epoch, 0x0D5])
        t, total = trainer.epoch + 1, cfg.schedule_epochs or trainer.cfg.schedule.epochs
        subset, cached = self._choose_subset(trainer, rng)
        models = m.encoders if cfg.cluster_with == "online" else m.teachers
        feats = [cached.get(b) if b in cached else self._extract(trainer, models[b], subset)
                 for b in range(len(models))]
        eps = cfg.eps(t, total)
        need = trainer.cfg.data.ids_per_batch
        while True:   # too few clusters for a P x K batch: loosen eps (logged in clusters.csv)
            labels = [cluster_features(f, eps, cfg.clustering) for f in feats]
            perm = random_derangement(len(models), rng) if cfg.cotrain == "derangement" else np.arange(len(models))
            assigned = []
            for b in range(len(models)):
                full = np.full(len(trainer.dataset.train), -1, np.int64)
                full[subset] = labels[perm[b]]
                assigned.append(full)
            joint = joint_labels(assigned, cfg.cotrain_images)
            if joint.max() + 1 >= need or eps >= 0.95:
                break
            eps = round(eps + 0.05, 4)
            console.print(f"[yellow]usl: fewer than {need} clusters; eps raised to {eps}[/yellow]")
        if joint.max() + 1 < need:
            from vreid.config.loader import ConfigError

            raise ConfigError(f"key 'data.ids_per_batch': usl clustering found {joint.max() + 1} clusters, fewer "
                              f"than data.ids_per_batch={need}; lower data.ids_per_batch or "
                              "model.clustering.min_samples", key="data.ids_per_batch")
        for b in range(len(models)):
            m.set_pseudo_labels(b, assigned[b], feats[b], subset)
        trainer.set_train_labels(joint.tolist())
        true_ids = np.array([trainer.dataset.train[i].vehicle_id for i in subset])
        in_loader = joint >= 0
        for b in range(len(models)):
            stats = cluster_stats(labels[b], true_ids)
            self.rows.append({"epoch": t, "backbone": b, "eps": round(eps, 4), **stats.as_row(),
                              "learns_from": int(perm[b]), "trained_images": int((in_loader & (assigned[b] >= 0)).sum()),
                              "loader_images": int(in_loader.sum()), "trained_classes": int(joint.max() + 1)})
        if trainer.dist.is_main:
            self._write_csv(trainer)

    def _write_csv(self, trainer) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomic(trainer.output_dir / "clusters.csv", buf.getvalue())

    # ----- per step -----------------------------------------------------------------------------------------
    def before_train(self, trainer) -> None:
        for mem in self.method.memories:
            mem.to(trainer.device)

    def after_step(self, trainer, batch, outputs, losses) -> None:
        m = self.method
        for b, (teacher, online) in enumerate(zip(m.teachers, m.encoders)):
            ema_update_(teacher, online, m.cfg.ema_momentum)
            if m.memories[b].momentum > 0 and f"feat{b}" in outputs:
                m.memories[b].update(outputs[f"feat{b}"], m.assigned[b][batch["indices"].to(m.assigned[b].device)])

    # ----- resume -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        m = self.method
        return {"assigned": [a.cpu() for a in m.assigned], "memories": [mem.state_dict() for mem in m.memories],
                "subset": None if self.subset is None else torch.from_numpy(self.subset),
                "partitions": [torch.from_numpy(p) for p in self.partitions], "window_start": self.window_start,
                "rows": self.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        m = self.method
        for b, (a, mem) in enumerate(zip(state["assigned"], state["memories"])):
            m.assigned[b] = a.clone()
            m.memories[b].load_state_dict(mem)
        self.subset = None if state["subset"] is None else state["subset"].numpy()
        self.partitions = [p.numpy() for p in state["partitions"]]
        self.window_start, self.rows = int(state["window_start"]), list(state["rows"])
