"""Evaluation under torchrun: each process embeds its share of query and gallery; the metrics come from the
gallery shards where they were embedded (vreid.eval.sharded), or, for what needs the whole gallery, from
features gathered on rank 0."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from vreid.config.schema import ExperimentConfig
from vreid.data.records import ImageRecord, ReidDataset
from vreid.engine.distributed import (
    DistInfo, all_gather_uneven, all_reduce_sum, barrier, broadcast_object, current_dist,
)
from vreid.engine.evaluate import evaluate_and_save, save_results
from vreid.engine.extract import extract_features
from vreid.eval.errors import EvaluationError
from vreid.eval.metrics import EvalResult, require_matches
from vreid.eval.protocols import PROTOCOLS, _labels as record_labels
from vreid.eval.selection import evaluate_switches
from vreid.eval.sharded import GALLERY_ALIGN, GalleryShard, evaluate_shards, shard_bounds
from vreid.methods import ReidMethod


class TorchCollectives:
    """The collectives of vreid.eval.sharded over the torch.distributed process group (gloo or NCCL)."""

    def __init__(self, info: DistInfo) -> None:
        self.info = info

    def gather(self, array: np.ndarray) -> np.ndarray:
        return torch.cat(all_gather_uneven(torch.from_numpy(np.ascontiguousarray(array)), self.info)).numpy()

    def sum(self, array: np.ndarray) -> np.ndarray:
        return all_reduce_sum(torch.from_numpy(array), self.info).numpy()


def sharded_junk_rule(protocol: str, rerank: str | None, metrics: Sequence[str] | None) -> str | None:
    """The protocol's junk rule if the gallery can stay sharded (one gallery list, no re-ranking, no CGM or
    ROC); None if the evaluation needs the whole gallery in one process."""
    if rerank not in (None, "", "none") or evaluate_switches(metrics):
        return None
    return getattr(PROTOCOLS.get(protocol), "junk_rule", None)


def _rows(parts: list[torch.Tensor]) -> torch.Tensor:
    """The ranks' feature rows in rank order; a rank with no records has a (0, 0) share."""
    filled = [p for p in parts if p.numel()]
    return torch.cat(filled) if filled else parts[0]


def sharded_protocol_result(qf_share: torch.Tensor, gf_share: torch.Tensor, query: Sequence[ImageRecord],
                            gallery: Sequence[ImageRecord], protocol: str, metric: str = "euclidean",
                            top_k: int = 0, info: DistInfo | None = None) -> EvalResult:
    """`evaluate_protocol` of the whole lists, from this rank's shares of them (`shard_bounds`; the gallery's
    with `align=GALLERY_ALIGN`).

    Every rank calls it and gets the same result; only the queries' features are gathered.
    """
    info = info or current_dist()
    qf = _rows(all_gather_uneven(qf_share, info))
    g_start, g_stop = shard_bounds(len(gallery), info.world_size, info.rank, GALLERY_ALIGN)
    gf = gf_share if gf_share.numel() else torch.zeros(0, qf.shape[1])
    q_ids, q_cams = record_labels(query)
    g_ids, g_cams = record_labels(gallery[g_start:g_stop])
    shard = GalleryShard(qf, gf, g_ids, g_cams, g_start, metric)
    return evaluate_shards([shard], q_ids, q_cams, len(gallery), junk_rule=PROTOCOLS.get(protocol).junk_rule,
                           top_k=top_k, metric=metric, protocol=protocol, collectives=TorchCollectives(info))


def _embed_share(method: ReidMethod, records: Sequence[ImageRecord], cfg: ExperimentConfig,
                 device: torch.device, info: DistInfo, amp: bool, align: int = 1) -> torch.Tensor:
    start, stop = shard_bounds(len(records), info.world_size, info.rank, align)
    share = extract_features(method, records[start:stop], cfg.data, device, flip=cfg.eval.flip, amp=amp)
    return share.to(device) if device.type == "cuda" else share  # scored on the GPU, as in one process


def _evaluate_on_main(qf_share: torch.Tensor, gf_share: torch.Tensor, dataset: ReidDataset,
                      cfg: ExperimentConfig, info: DistInfo, output_dir: str | Path | None,
                      rerank: str | None) -> dict[str, Any]:
    """Features gathered on rank 0 and scored there as in one process; every rank returns its results, or
    raises if it failed (so that no rank waits for the others forever)."""
    q_parts = all_gather_uneven(qf_share, info, dst=0)
    g_parts = all_gather_uneven(gf_share, info, dst=0)
    outcome: dict[str, Any] | str = {}
    if info.is_main:
        try:
            outcome = evaluate_and_save(_rows(q_parts), _rows(g_parts), dataset, cfg, output_dir, rerank)
        except Exception as error:
            broadcast_object(f"{type(error).__name__}: {error}", info)
            raise
    outcome = broadcast_object(outcome, info)
    if isinstance(outcome, str):
        raise EvaluationError(f"the evaluation failed on rank 0: {outcome}")
    return outcome


def evaluate_method_distributed(method: ReidMethod, dataset: ReidDataset, cfg: ExperimentConfig,
                                device: torch.device, output_dir: str | Path | None = None, amp: bool = False,
                                rerank: str | None = None) -> dict[str, Any]:
    """`evaluate_method` in each process of the group: all return the results, rank 0 writes the files.

    Single-gallery protocols without re-ranking, CGM or ROC keep the gallery sharded; VehicleID (gallery
    drawn anew per seed), re-ranking (the whole kNN graph), CGM and ROC are scored on rank 0.
    """
    info = current_dist()
    rerank = rerank if rerank is not None else cfg.eval.rerank
    protocol = cfg.eval.protocol or dataset.protocol
    qf_share = _embed_share(method, dataset.query, cfg, device, info, amp)
    gf_share = _embed_share(method, dataset.gallery, cfg, device, info, amp, GALLERY_ALIGN)
    if sharded_junk_rule(protocol, rerank, cfg.eval.metrics) is None:
        return _evaluate_on_main(qf_share, gf_share, dataset, cfg, info, output_dir, rerank)
    result = sharded_protocol_result(qf_share, gf_share, dataset.query, dataset.gallery, protocol,
                                     cfg.eval.metric, cfg.eval.top_k if output_dir is not None else 0, info)
    results = require_matches(result, where=f"dataset at {dataset.root}").to_dict()
    if output_dir is not None and info.is_main:
        save_results(output_dir, results, result.ranked_indices, result.ranked_distances, rerank="none")
    barrier(info)  # the files exist when any rank returns
    return results
