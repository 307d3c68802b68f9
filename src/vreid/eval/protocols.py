"""Benchmark protocols (registry PROTOCOLS) and `evaluate`, the one call that re-ranks and scores features."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from vreid.data.records import ImageRecord
from vreid.eval.distance import DistanceSource, FeatureDistances, as_tensor
from vreid.eval.errors import EvaluationError
from vreid.eval.metrics import EvalResult, evaluate_distances
from vreid.eval.selection import evaluate_switches
from vreid.eval.verification import mean_verification, verify_distances
from vreid.registry import Registry

#: name -> function(qf, gf, query_records, gallery_records, metric=, rerank=, rerank_options=, **kw) -> EvalResult
PROTOCOLS: Registry[Callable[..., EvalResult]] = Registry("protocol")

#: VehicleID: one random image per id forms the gallery, repeated with these seeds.
VEHICLEID_SEEDS = tuple(range(10))


def distance_source(qf: Any, gf: Any, metric: str = "euclidean", rerank: str = "none",
                    rerank_options: dict[str, Any] | None = None) -> DistanceSource:
    """Query x gallery distances, re-ranked by the named re-ranker ("none", "kreciprocal", "sparse", "aqe", ...)."""
    if rerank in (None, "", "none"):
        return FeatureDistances(qf, gf, metric)
    from vreid.rerank.registry import build_reranker

    return build_reranker(rerank, qf, gf, metric, **(rerank_options or {}))


def evaluate(qf: Any, gf: Any, q_ids: Any, g_ids: Any, q_cams: Any = None, g_cams: Any = None,
             metric: str = "euclidean", rerank: str = "none", junk_rule: str = "same_id_same_camera",
             max_rank: int = 50, chunk_size: int | None = None, rerank_options: dict[str, Any] | None = None,
             cgm: bool = False, protocol: str = "custom", top_k: int = 0, roc: bool = False) -> EvalResult:
    """CMC, mAP and mINP of query features against gallery features, in query blocks.

    Features: numpy arrays or tensors (Q x D, G x D). `junk_rule`: "same_id_same_camera" (VeRi-776,
    default), "same_camera" or "none". `rerank`: a name in vreid.rerank.RERANKERS. `cgm=True` adds mCGM;
    `roc=True` adds TPR@FPR and the ROC of the same (re-ranked) distances (`result.verification`).

    >>> r = evaluate(qf, gf, q_ids, g_ids, q_cams, g_cams)   # doctest: +SKIP
    >>> r.mAP, r.cmc[0], r.mINP                               # doctest: +SKIP
    """
    source = distance_source(qf, gf, metric, rerank, rerank_options)
    result = evaluate_distances(source, q_ids, g_ids, q_cams, g_cams, junk_rule=junk_rule, max_rank=max_rank,
                                chunk_size=chunk_size, cgm=cgm, metric=metric, rerank=rerank or "none",
                                protocol=protocol, top_k=top_k)
    if result.ranked_distances is not None and isinstance(source, FeatureDistances) and metric == "euclidean":
        np.sqrt(result.ranked_distances, out=result.ranked_distances)  # features give squared distances
    if roc:
        result.verification = verify_distances(source, q_ids, g_ids, q_cams, g_cams, junk_rule=junk_rule,
                                               chunk_size=chunk_size)
    return result


def _labels(records: Sequence[ImageRecord]) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([r.vehicle_id for r in records], np.int64), np.array([r.camera_id for r in records], np.int64))


def _junk_protocol(name: str, junk_rule: str) -> Callable[..., EvalResult]:
    def run(qf: Any, gf: Any, query: Sequence[ImageRecord], gallery: Sequence[ImageRecord], **kw: Any) -> EvalResult:
        q_ids, q_cams = _labels(query)
        g_ids, g_cams = _labels(gallery)
        kw.setdefault("junk_rule", junk_rule)
        return evaluate(qf, gf, q_ids, g_ids, q_cams, g_cams, protocol=name, **kw)

    run.__doc__ = f"Single-query protocol '{name}' with gallery rule '{junk_rule}'."
    run.junk_rule = junk_rule  # type: ignore[attr-defined]  # one gallery, one rule: vreid.eval.sharded can split it
    return run


PROTOCOLS.register("veri776", junk_rule="same_id_same_camera")(_junk_protocol("veri776", "same_id_same_camera"))
# VeRi-Wild: FastReID (and most papers since) drop same-id same-camera gallery images; the dataset's authors
# do not (PKU-IMRE/VERI-Wild#4). Both are offered and the rule is printed with every result.
PROTOCOLS.register("veriwild", junk_rule="same_id_same_camera")(_junk_protocol("veriwild", "same_id_same_camera"))
PROTOCOLS.register("veriwild_keep_same_camera", junk_rule="none")(
    _junk_protocol("veriwild_keep_same_camera", "none"))
PROTOCOLS.register("plain", junk_rule="same_id_same_camera")(_junk_protocol("plain", "same_id_same_camera"))
PROTOCOLS.register("plain_same_camera", junk_rule="same_camera")(_junk_protocol("plain_same_camera", "same_camera"))
PROTOCOLS.register("plain_none", junk_rule="none")(_junk_protocol("plain_none", "none"))


def vehicleid_gallery_draw(ids: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(gallery, query) indices: one random image per id (shuffle, first of each id) goes to the gallery."""
    perm = np.random.default_rng(seed).permutation(len(ids))
    _, first = np.unique(ids[perm], return_index=True)
    is_gallery = np.zeros(len(ids), bool)
    is_gallery[perm[first]] = True
    return np.nonzero(is_gallery)[0], np.nonzero(~is_gallery)[0]


def _require_vehicleid_queries(ids: np.ndarray) -> None:
    """EvaluationError unless some vehicle has two test images (with one each, every draw has no query)."""
    if len(np.unique(ids)) < len(ids):
        return
    raise EvaluationError(
        f"protocol 'vehicleid': no vehicle in the test list has two or more images ({len(ids)} image(s)), so "
        "there is no query (each draw puts one image per vehicle in the gallery and the rest are the queries); "
        "fix: use a test list (train_test_split/test_list_<size>.txt) with at least two images per vehicle, as "
        "the official lists have (`vreid data check --layout vehicleid` reports this)")


def _draw_summary(draw: EvalResult) -> dict[str, Any]:
    """What a VehicleID result keeps of one draw: mAP, mINP, Rank-1/5/10, and TPR@FPR and AUC when computed."""
    numbers = draw.to_dict()
    summary = {k: v for k, v in numbers.items() if k in ("mAP", "mINP", "rank1", "rank5", "rank10")}
    return {**summary, **(draw.verification.summary() if draw.verification is not None else {})}


@PROTOCOLS.register("vehicleid", junk_rule="none")
def vehicleid(qf: Any, gf: Any, query: Sequence[ImageRecord], gallery: Sequence[ImageRecord],
              seeds: Sequence[int] = VEHICLEID_SEEDS, **kw: Any) -> EvalResult:
    """VehicleID: per seed, one image per id is the gallery and all others are queries; metrics are averaged.

    Features are extracted once: `query` is the test list (if `gallery` lists other images, they are added
    to it). No camera rule (VehicleID has no cameras). Per-draw numbers are in `extra["draws"]`; with
    `roc=True` the TPRs and the AUC are means over the draws too.
    """
    same = len(query) == len(gallery) and all(a.path == b.path for a, b in zip(query, gallery))
    feats = as_tensor(qf) if same else torch.cat([as_tensor(qf), as_tensor(gf).to(as_tensor(qf).device)])
    records = list(query) if same else list(query) + list(gallery)
    ids, _ = _labels(records)
    _require_vehicleid_queries(ids)
    if kw.get("cgm"):
        raise EvaluationError("protocol 'vehicleid': CGM scores cameras and VehicleID has none; fix: leave cgm out "
                              "of eval.metrics")
    kw.pop("junk_rule", None)
    kw.pop("top_k", None)  # each draw has its own gallery: ranked lists come from the caller's features
    draws = []
    for seed in seeds:
        g_idx, q_idx = vehicleid_gallery_draw(ids, seed)
        draws.append(evaluate(feats[q_idx], feats[g_idx], ids[q_idx], ids[g_idx], junk_rule="none",
                              protocol="vehicleid", **kw))
    first = draws[0]
    mean = EvalResult(
        mAP=float(np.mean([d.mAP for d in draws])), mINP=float(np.mean([d.mINP for d in draws])),
        cmc=np.mean([d.cmc[: min(len(x.cmc) for x in draws)] for d in draws], axis=0),
        num_queries=first.num_queries, num_valid_queries=first.num_valid_queries, junk_rule="none",
        metric=first.metric, rerank=first.rerank, protocol="vehicleid",
    )
    if first.verification is not None:
        mean.verification = mean_verification([d.verification for d in draws])
    mean.extra = {
        "seeds": list(seeds),
        "draws": [_draw_summary(d) for d in draws],
        "gallery_rule": "one random image per id (shuffle with the seed, first image of each id)",
    }
    return mean


def evaluate_protocol(name: str, qf: Any, gf: Any, query_records: Sequence[ImageRecord],
                      gallery_records: Sequence[ImageRecord], metric: str = "euclidean", rerank: str = "none",
                      rerank_options: dict[str, Any] | None = None, metrics: Sequence[str] | None = None,
                      **kwargs: Any) -> EvalResult:
    """Score features under a named protocol (PROTOCOLS) from the records' vehicle and camera ids.

    `rerank`: "none" or a name in vreid.rerank.RERANKERS (kreciprocal, sparse, aqe, alpha_qe, fastreid_aqe);
    `rerank_options` go to the re-ranker (e.g. {"k1": 20, "k2": 6, "lambda_value": 0.3}).
    `metrics`: names in vreid.eval.selection.EVAL_METRICS ("cgm" and "roc" add their passes).
    """
    kwargs.update(evaluate_switches(metrics))
    return PROTOCOLS.get(name)(qf, gf, query_records, gallery_records, metric=metric, rerank=rerank,
                               rerank_options=rerank_options, **kwargs)
