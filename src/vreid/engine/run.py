"""The three jobs the CLI exposes, as library functions: train, evaluate, extract."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vreid.config.schema import ExperimentConfig
from vreid.data.records import ReidDataset
from vreid.engine.bundle import load_bundle
from vreid.engine.evaluate import evaluate_method
from vreid.engine.extract import extract_features
from vreid.engine.run_info import write_run_info
from vreid.engine.trainer import Trainer, pick_device
from vreid.fileio import atomic_path


def load_data(cfg: ExperimentConfig, verify: bool = True) -> ReidDataset:
    from vreid.data import load_dataset

    return load_dataset(cfg.data, verify=verify)


def run_training(cfg: ExperimentConfig, resume: bool = False, dataset: ReidDataset | None = None) -> dict[str, Any]:
    dataset = dataset if dataset is not None else load_data(cfg)
    trainer = Trainer(cfg, dataset)
    try:
        return trainer.fit(resume=resume)
    finally:
        trainer.close()


def run_evaluation(cfg: ExperimentConfig, checkpoint: str | Path, rerank: str | None = None,
                   output_dir: str | Path | None = None, dataset: ReidDataset | None = None) -> dict[str, Any]:
    dataset = dataset if dataset is not None else load_data(cfg)
    device = pick_device(cfg.train.device)
    method = load_bundle(checkpoint).to(device)
    out = Path(output_dir) if output_dir is not None else Path(cfg.output_dir) / "eval"
    write_run_info(out, cfg, cfg.seed, {"checkpoint": str(checkpoint), "rerank": rerank or cfg.eval.rerank})
    return evaluate_method(method, dataset, cfg, device, out, amp=cfg.train.amp and device.type == "cuda",
                           rerank=rerank)


def run_extraction(cfg: ExperimentConfig, checkpoint: str | Path, output: str | Path, split: str = "all",
                   dataset: ReidDataset | None = None) -> dict[str, int]:
    """Write features with their vehicle ids, camera ids and image paths to one .npz file."""
    dataset = dataset if dataset is not None else load_data(cfg)
    device = pick_device(cfg.train.device)
    method = load_bundle(checkpoint).to(device)
    splits = ("train", "query", "gallery") if split == "all" else (split,)
    arrays: dict[str, np.ndarray] = {}
    counts = {}
    for name in splits:
        records = getattr(dataset, name)
        feats = extract_features(method, records, cfg.data, device, flip=cfg.eval.flip)
        arrays[f"{name}_features"] = feats.numpy().astype(np.float32)
        arrays[f"{name}_vehicle_ids"] = np.array([r.vehicle_id for r in records], dtype=np.int64)
        arrays[f"{name}_camera_ids"] = np.array([r.camera_id for r in records], dtype=np.int64)
        arrays[f"{name}_paths"] = np.array([r.path for r in records])
        counts[name] = len(records)
    with atomic_path(output) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return counts


__all__ = ["run_training", "run_evaluation", "run_extraction", "load_data"]
