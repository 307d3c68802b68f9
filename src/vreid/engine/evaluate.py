"""Evaluate a method on a dataset's query/gallery under its protocol; save results and ranked lists."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vreid.config.schema import ExperimentConfig
from vreid.data.records import ReidDataset
from vreid.engine.distributed import current_dist
from vreid.engine.extract import extract_features
from vreid.fileio import atomic_path, write_json_atomic
from vreid.methods import ReidMethod


def evaluate_split_result(qf: torch.Tensor, gf: torch.Tensor, dataset: ReidDataset, cfg: ExperimentConfig,
                          rerank: str | None = None, top_k: int = 0):
    """The EvalResult under the dataset's protocol, with the extra metrics of `cfg.eval.metrics` (and `top_k`
    ranked lists by the re-ranked distances).

    Raises EvaluationError when no query has a match (the metrics would be 0 for a reason that is not the model).
    """
    from vreid.eval import evaluate_protocol
    from vreid.eval.metrics import require_matches

    protocol = cfg.eval.protocol or dataset.protocol
    result = evaluate_protocol(
        protocol, qf, gf, dataset.query, dataset.gallery, metric=cfg.eval.metric,
        rerank=rerank if rerank is not None else cfg.eval.rerank, rerank_options=cfg.eval.rerank_options,
        top_k=top_k, metrics=cfg.eval.metrics,
    )
    return require_matches(result, where=f"dataset at {dataset.root}")


def evaluate_split(qf: torch.Tensor, gf: torch.Tensor, dataset: ReidDataset, cfg: ExperimentConfig,
                   rerank: str | None = None) -> dict[str, Any]:
    """Metrics as a flat dict of fractions (mAP, mINP, rank1, rank5, rank10) plus protocol details."""
    return evaluate_split_result(qf, gf, dataset, cfg, rerank).to_dict()


def evaluate_method(method: ReidMethod, dataset: ReidDataset, cfg: ExperimentConfig, device: torch.device,
                    output_dir: str | Path | None = None, amp: bool = False,
                    rerank: str | None = None) -> dict[str, Any]:
    """Embed query and gallery, score them; with `output_dir`, write results.json and ranked.npz there.

    The ranked lists follow the distances the metrics used (re-ranked ones too); under the VehicleID protocol,
    whose gallery is drawn anew per seed, they rank the whole test list by feature distance. In a process
    group of two or more every process calls this and embeds its share (vreid.engine.sharded_eval).
    """
    if current_dist().enabled:
        from vreid.engine.sharded_eval import evaluate_method_distributed

        return evaluate_method_distributed(method, dataset, cfg, device, output_dir, amp, rerank)
    qf = extract_features(method, dataset.query, cfg.data, device, flip=cfg.eval.flip, amp=amp)
    gf = extract_features(method, dataset.gallery, cfg.data, device, flip=cfg.eval.flip, amp=amp)
    if device.type == "cuda":  # distances, ranking and re-ranking then run on the GPU too
        qf, gf = qf.to(device), gf.to(device)
    return evaluate_and_save(qf, gf, dataset, cfg, output_dir, rerank)


def evaluate_and_save(qf: torch.Tensor, gf: torch.Tensor, dataset: ReidDataset, cfg: ExperimentConfig,
                      output_dir: str | Path | None = None, rerank: str | None = None) -> dict[str, Any]:
    """The metrics of embedded query and gallery; with `output_dir`, results.json and ranked.npz go there."""
    result = evaluate_split_result(qf, gf, dataset, cfg, rerank, top_k=cfg.eval.top_k if output_dir else 0)
    results = result.to_dict()
    if output_dir is not None:
        if result.ranked_indices is None:
            from vreid.eval import ranked_topk

            ranked = ranked_topk(qf, gf, k=min(cfg.eval.top_k, gf.shape[0]), metric=cfg.eval.metric)
            ranked_by = "none"  # feature distances, whatever re-ranked the metrics
        else:
            ranked, ranked_by = (result.ranked_indices, result.ranked_distances), results["rerank"]
        save_results(output_dir, results, *ranked, rerank=ranked_by)
    return results


def save_results(output_dir: str | Path, results: dict[str, Any], indices: np.ndarray, distances: np.ndarray,
                 rerank: str = "none") -> None:
    """results.json and ranked.npz in `output_dir`."""
    output_dir = Path(output_dir)
    write_json_atomic(output_dir / "results.json", results)
    save_ranked_lists(output_dir / "ranked.npz", indices, distances, rerank=rerank)


def save_ranked_lists(path: Path, indices: np.ndarray, distances: np.ndarray, rerank: str = "none") -> None:
    """Top-k gallery indices and distances per query, for the report and the web page."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, indices=np.asarray(indices), distances=np.asarray(distances), rerank=np.array(rerank))
