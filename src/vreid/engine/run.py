"""The three jobs the CLI exposes, as library functions: train, evaluate, extract.

Each checks everything it can (vreid.engine.preflight) before reading images, and writes nothing until then.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from rich.console import Console

from vreid.config.loader import ConfigError
from vreid.config.schema import ExperimentConfig
from vreid.data.records import ReidDataset
from vreid.engine.bundle import load_bundle, resolve_weights
from vreid.engine.distributed import broadcast_object, process_group
from vreid.engine.evaluate import evaluate_method
from vreid.engine.extract import extract_features
from vreid.engine.preflight import (
    check_identities_fill_a_batch, check_metadata_present, check_queries_can_match, preflight,
)
from vreid.launch import launched_as_main
from vreid.engine.preprocessing import model_preprocessing
from vreid.engine.run_folder import RunLock, check_new_run, check_resume_settings, clear_run_outputs
from vreid.engine.run_info import write_run_info
from vreid.engine.stages import method_stages, run_stages
from vreid.engine.trainer import Trainer, pick_device
from vreid.fileio import atomic_path

console = Console(stderr=True)


def load_data(cfg: ExperimentConfig, verify: bool = True) -> ReidDataset:
    from vreid.data import load_dataset

    return load_dataset(cfg.data, verify=verify)


def run_training(cfg: ExperimentConfig, resume: bool = False, dataset: ReidDataset | None = None,
                 overwrite: bool = False, allow_changes: bool = False) -> dict[str, Any]:
    """Train `cfg` into `cfg.output_dir`: a fresh folder, `resume` a stopped run, or `overwrite` an old one.

    A method that declares stages (vreid.engine.stages) trains them in order, each a run of its own under
    `<output_dir>/stages/`, and its last stage's model lands in `output_dir`.
    """
    preflight(cfg, "train", check_data=dataset is None)
    stages = method_stages(cfg)
    if stages:
        return run_stages(cfg, stages, _train_single_run, resume=resume, dataset=dataset, overwrite=overwrite,
                          allow_changes=allow_changes)
    return _train_single_run(cfg, resume=resume, dataset=dataset, overwrite=overwrite, allow_changes=allow_changes,
                             checked=True)


def _train_single_run(cfg: ExperimentConfig, resume: bool = False, dataset: ReidDataset | None = None,
                      overwrite: bool = False, allow_changes: bool = False, checked: bool = False) -> dict[str, Any]:
    """One ordinary training run (a whole run, or one stage of a multi-stage run)."""
    if not checked:
        preflight(cfg, "train", check_data=dataset is None)

    def check_folder() -> dict[str, Any]:
        check_new_run(cfg.output_dir, resume, overwrite)
        changes = check_resume_settings(cfg.output_dir, dataclasses.asdict(cfg), allow_changes) if resume else []
        return {"changes_on_resume": changes} if changes else {}

    if launched_as_main():  # the other ranks would see rank 0's first files and refuse
        check_folder()
    dataset = dataset if dataset is not None else load_data(cfg)
    check_queries_can_match(cfg, dataset)
    check_identities_fill_a_batch(cfg, dataset)
    check_metadata_present(cfg, dataset)
    lock = RunLock(cfg.output_dir).acquire() if launched_as_main() else None
    try:
        notes = check_folder() if lock is not None else {}  # again: another run may have ended meanwhile
        trainer = Trainer(cfg, dataset)  # builds the model; writes nothing
        if overwrite and lock is not None:  # only now: a failure above keeps the old run
            clear_run_outputs(cfg.output_dir)
        try:
            return trainer.fit(resume=resume, run_notes=notes)
        finally:
            trainer.close()
    finally:
        if lock is not None:
            lock.release()


def run_folder_of(checkpoint: str | Path) -> Path:
    """The run folder a checkpoint argument belongs to (run folder, checkpoints/step-* folder or weights file)."""
    weights = resolve_weights(checkpoint)
    folder = weights.parent
    return folder.parent.parent if folder.parent.name == "checkpoints" else folder


def default_eval_dir(checkpoint: str | Path, rerank: str) -> Path:
    """`<run>/eval/<time>-<rerank>[-N]`: a new folder per evaluation, so none overwrites another."""
    base = run_folder_of(checkpoint) / "eval" / f"{time.strftime('%Y%m%d-%H%M%S')}-{rerank}"
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder


def _check_eval_output(out: Path, overwrite: bool) -> None:
    if (out / "results.json").exists() and not overwrite:
        raise ConfigError(f"--output {out}: holds the results of an earlier evaluation; pass --overwrite to "
                          "replace them, or choose another folder (without --output each evaluation gets its "
                          "own folder under <run>/eval/)")


def _load_for_inference(cfg: ExperimentConfig, checkpoint: str | Path, explicit: Iterable[str]):
    method = load_bundle(checkpoint)
    cfg, notes = model_preprocessing(cfg, method.info, explicit)
    for note in notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    return cfg, method


def run_evaluation(cfg: ExperimentConfig, checkpoint: str | Path, rerank: str | None = None,
                   output_dir: str | Path | None = None, dataset: ReidDataset | None = None,
                   overwrite: bool = False, explicit: Iterable[str] = ()) -> dict[str, Any]:
    """Evaluate weights under the dataset's protocol; results.json and ranked.npz go to a folder of their own.

    `explicit`: config keys the user set on the command line (they win over the model's own preprocessing).
    """
    rerank = rerank or cfg.eval.rerank
    out = Path(output_dir) if output_dir is not None else None
    preflight(cfg, "eval", output_dir=out, rerank=rerank, check_data=dataset is None)
    if out is not None:
        _check_eval_output(out, overwrite)
    resolve_weights(checkpoint)  # a wrong --checkpoint fails before the images are read
    out = out if out is not None else default_eval_dir(checkpoint, rerank)
    dataset = dataset if dataset is not None else load_data(cfg)
    cfg, method = _load_for_inference(cfg, checkpoint, explicit)
    with process_group(pick_device(cfg.train.device)) as (info, device):  # torchrun: each process its share
        out = broadcast_object(out, info)  # rank 0's folder: the default one is named by the clock
        method = method.to(device)
        results = evaluate_method(method, dataset, cfg, device, out, amp=cfg.train.amp and device.type == "cuda",
                                  rerank=rerank)
        if info.is_main:
            write_run_info(out, cfg, cfg.seed, {"checkpoint": str(checkpoint), "rerank": rerank})
    results["output_dir"] = str(out)
    return results


def run_extraction(cfg: ExperimentConfig, checkpoint: str | Path, output: str | Path, split: str = "all",
                   dataset: ReidDataset | None = None, explicit: Iterable[str] = ()) -> dict[str, int]:
    """Write features with their vehicle ids, camera ids and image paths to one .npz file."""
    preflight(cfg, "extract", output_file=output, check_data=dataset is None)
    resolve_weights(checkpoint)
    dataset = dataset if dataset is not None else load_data(cfg)
    cfg, method = _load_for_inference(cfg, checkpoint, explicit)
    device = pick_device(cfg.train.device)
    method = method.to(device)
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


__all__ = ["run_training", "run_evaluation", "run_extraction", "load_data", "default_eval_dir"]
