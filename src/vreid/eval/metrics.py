"""CMC, mAP, mINP (and CGM) from query-row blocks of distances, ranking only the positives.

No Q x G matrix and no sort of a gallery row: for each query the rank of each positive is the number of
valid gallery items that come before it, with the order of a stable argsort of the distances (among equal
distances the lower gallery index comes first), which is how the reference evaluators rank.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vreid.eval.distance import (
    DistanceSource, FeatureDistances, MatrixDistances, as_int_array, auto_chunk_size, device_index, iter_blocks,
    source_device, to_numpy,
)
from vreid.eval.errors import EvaluationError
from vreid.eval.ranking import topk_block
from vreid.progress import block_rows, track

if TYPE_CHECKING:
    from vreid.eval.verification import VerificationResult

#: Gallery images left out of each query's ranked list.
JUNK_RULES = {
    "same_id_same_camera": "gallery images with the query's vehicle id and camera are removed",
    "same_camera": "all gallery images from the query's camera are removed",
    "none": "nothing is removed",
}


@dataclass
class EvalResult:
    """Retrieval metrics as fractions; `cmc[k]` = Rank-(k+1). Queries without a valid positive are skipped."""

    mAP: float
    mINP: float
    cmc: np.ndarray
    num_queries: int
    num_valid_queries: int
    junk_rule: str = "same_id_same_camera"
    metric: str = "euclidean"
    rerank: str = "none"
    protocol: str = "custom"
    mCGM: float | None = None
    num_cgm_queries: int | None = None
    average_precision: np.ndarray | None = field(default=None, repr=False)
    first_match_rank: np.ndarray | None = field(default=None, repr=False)
    #: Q x top_k nearest gallery indices and their distances (before junk removal), when asked for
    ranked_indices: np.ndarray | None = field(default=None, repr=False)
    ranked_distances: np.ndarray | None = field(default=None, repr=False)
    #: ROC of the same pairs (vreid.eval.verification), when asked for
    verification: VerificationResult | None = field(default=None, repr=False)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_skipped_queries(self) -> int:
        return self.num_queries - self.num_valid_queries

    def rank(self, k: int) -> float | None:
        """Rank-k accuracy (1-based k), or None beyond max_rank."""
        return float(self.cmc[k - 1]) if 0 < k <= len(self.cmc) else None

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-ready dict: mAP, mINP, rank1/5/10, cmc list, counts and how the numbers were made."""
        out: dict[str, Any] = {"mAP": float(self.mAP), "mINP": float(self.mINP)}
        for k in (1, 5, 10):
            out[f"rank{k}"] = self.rank(k)
        if self.mCGM is not None:
            out["mCGM"] = float(self.mCGM)
            out["num_cgm_queries"] = self.num_cgm_queries
        out.update({
            "cmc": [float(v) for v in self.cmc],
            "num_queries": self.num_queries,
            "num_valid_queries": self.num_valid_queries,
            "num_skipped_queries": self.num_skipped_queries,
            "protocol": self.protocol,
            "junk_rule": self.junk_rule,
            "junk_rule_text": JUNK_RULES.get(self.junk_rule, self.junk_rule),
            "metric": self.metric,
            "rerank": self.rerank,
        })
        if self.verification is not None:
            out.update(self.verification.to_dict())
        out.update(self.extra)
        return out


def require_matches(result: EvalResult, where: str = "") -> EvalResult:
    """`result` if some query has a valid match, else EvaluationError: every metric would be a meaningless 0."""
    if result.num_valid_queries > 0:
        return result
    raise no_match_error(result.num_queries, result.protocol, result.junk_rule, where)


def no_match_error(num_queries: int, protocol: str, rule: str, where: str = "") -> EvaluationError:
    """The error for a query set none of which can match: its likely cause under `rule`, and the fix."""
    if rule == "none":
        cause = "no query vehicle has an image in the gallery"
        fix = "use a gallery that holds the query vehicles (`vreid data check` lists the query ids it lacks)"
    else:
        cause = f"every positive is removed ({JUNK_RULES.get(rule, rule)}), e.g. all images come from one camera"
        fix = ("set eval.protocol=plain_none to keep same-camera matches, or use a dataset whose vehicles appear "
               "on two or more cameras")
    prefix = f"{where}: " if where else ""
    return EvaluationError(f"{prefix}none of the {num_queries} queries has a match in the gallery under "
                           f"protocol '{protocol}', junk rule '{rule}': {cause}; fix: {fix}")


def count_matchable_queries(q_ids: Any, q_cams: Any, g_ids: Any, g_cams: Any, junk_rule: str) -> int:
    """How many queries keep at least one positive after junk removal (from ids and cameras; no features)."""
    q_ids, g_ids = as_int_array(q_ids), as_int_array(g_ids)
    rows, cols = GalleryIndex(g_ids).same_id(q_ids)
    if junk_rule != "none":  # both camera rules leave only the positives seen by another camera
        keep = as_int_array(g_cams)[cols] != as_int_array(q_cams)[rows]
        rows = rows[keep]
    return int(len(np.unique(rows)))


class GalleryIndex:
    """Gallery items grouped by vehicle id, so that each query finds its same-id items without a Q x G scan."""

    def __init__(self, g_ids: np.ndarray) -> None:
        self.order = np.argsort(g_ids, kind="stable")
        self.ids, self.starts, self.counts = np.unique(g_ids[self.order], return_index=True, return_counts=True)

    def same_id(self, q_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query position, gallery index) of every same-id pair, queries in order, gallery indices ascending."""
        if len(self.ids) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        pos = np.minimum(np.searchsorted(self.ids, q_ids), len(self.ids) - 1)
        counts = np.where(self.ids[pos] == q_ids, self.counts[pos], 0)
        rows = np.repeat(np.arange(len(q_ids)), counts)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return rows, self.order[np.repeat(self.starts[pos], counts) + offsets]


def _rank_block(dist: torch.Tensor, rows: np.ndarray, cols: np.ndarray, pos_dist: np.ndarray,
                self_counted: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ranks of positives (rows, cols) whose distances are `pos_dist`, among the finite entries of `dist`.

    rank = #{finite i: d_i < d} + #{finite i: d_i == d, i < j}; `self_counted` says whether the positive's
    own entry is still finite in `dist` (then it is not counted as its own tie).
    Returns rows, cols, distances, ranks, sorted by (row, distance, gallery index).
    """
    order = np.lexsort((cols, pos_dist, rows))
    rows, cols, pos_dist = rows[order], cols[order], pos_dist[order]
    return rows, cols, pos_dist, count_before(dist, rows, cols, pos_dist, self_counted)


def count_before(dist: torch.Tensor, rows: np.ndarray, tie_cols: np.ndarray, pos_dist: np.ndarray,
                 self_counted: bool | np.ndarray) -> np.ndarray:
    """Per positive, #{finite i in its row: d_i < d} + #{finite i: d_i == d, i < tie_col}; `rows` ascending.

    `self_counted` (one flag, or one per positive): the positive's own entry is finite in `dist`, so it is
    not its own tie. A gallery shard passes its local bound of the positive's global index as `tie_cols`.
    """
    B = dist.shape[0]
    counts = np.bincount(rows, minlength=B)
    width = int(counts.max()) if len(rows) else 0
    if width == 0:
        return np.zeros(0, np.int64)
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    inf = torch.tensor(float("inf"), device=dist.device)
    thresholds = torch.full((B, width), float("inf"), device=dist.device)
    r_t, s_t = device_index(rows, dist), device_index(slot, dist)
    thresholds[r_t, s_t] = device_index(pos_dist, dist)
    above = torch.nextafter(thresholds, inf)
    bounds = torch.sort(torch.cat([thresholds, above], 1), dim=1).values.contiguous()
    # bucket(i) = #{bounds <= d_i}; then #{i: d_i < t} = #{i: bucket(i) <= first position of t in bounds}.
    bucket = torch.searchsorted(bounds, dist, right=True)
    hist = torch.zeros(B, 2 * width + 1, dtype=torch.int64, device=dist.device)
    hist.scatter_add_(1, bucket, torch.ones(1, 1, dtype=torch.int64, device=dist.device).expand_as(bucket))
    del bucket
    below = hist.cumsum_(1)
    strict = below.gather(1, torch.searchsorted(bounds, thresholds))
    at_most = below.gather(1, torch.searchsorted(bounds, above))
    ranks = to_numpy(strict[r_t, s_t]).copy()
    ties = to_numpy(at_most[r_t, s_t] - strict[r_t, s_t]) - np.asarray(self_counted, np.int64)
    for i in np.nonzero(ties > 0)[0]:  # equal distances: lower gallery index first (stable order)
        b, j = int(rows[i]), int(tie_cols[i])
        ranks[i] += int((dist[b, :j] == float(pos_dist[i])).sum())
    return ranks


def rank_positives(dist: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0-based ranks of positives (rows[i], cols[i]) in a block whose excluded items are +inf.

    Returns (order, ranks): `order` sorts the positives by (row, distance, gallery index), ranks follow it.
    """
    pos_dist = to_numpy(dist[device_index(rows, dist), device_index(cols, dist)])
    order = np.lexsort((cols, pos_dist, rows))
    return order, _rank_block(dist, rows, cols, pos_dist, self_counted=True)[3]


def _per_query(rows: np.ndarray, ranks: np.ndarray, num_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AP, INP and first-positive rank per query row (rows sorted, ranks ascending within a row)."""
    counts = np.bincount(rows, minlength=num_rows)
    starts = np.cumsum(counts) - counts
    hit = (np.arange(len(rows)) - np.repeat(starts, counts) + 1).astype(np.float64)
    precision = hit / (ranks + 1.0)
    # astype: bincount of no rows returns int64 even with weights, and the in-place divide below must be float.
    ap = np.bincount(rows, weights=precision, minlength=num_rows).astype(np.float64, copy=False)
    has = counts > 0
    ap[has] /= counts[has]
    ap[~has] = np.nan
    first = np.full(num_rows, -1, np.int64)
    inp = np.full(num_rows, np.nan)
    first[has] = ranks[starts[has]]
    inp[has] = counts[has] / (ranks[starts[has] + counts[has] - 1] + 1.0)
    return ap, inp, first


def _cgm_block(dist: torch.Tensor, rows: np.ndarray, cols: np.ndarray, pos_dist: np.ndarray,
               q_cams: np.ndarray, g_cams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-query CGM for a block; `dist` has every same-id item at +inf (positives are not negatives)."""
    B = dist.shape[0]
    cross = g_cams[cols] != q_cams[rows]
    rows, cols, pos_dist = rows[cross], cols[cross], pos_dist[cross]
    cgm = np.full(B, np.nan)
    if len(rows) == 0:
        return cgm, np.zeros(B, bool)
    r, c, _, neg_before = _rank_block(dist, rows, cols, pos_dist, self_counted=False)
    score = 1.0 / (1.0 + neg_before)
    cams = g_cams[c]
    groups, inverse = np.unique(np.stack([r, cams]), axis=1, return_inverse=True)
    inverse = inverse.reshape(-1)
    per_cam = np.bincount(inverse, weights=score) / np.bincount(inverse)
    n_cams = np.bincount(groups[0], minlength=B)
    total = np.bincount(groups[0], weights=per_cam, minlength=B)
    cgm[n_cams > 0] = total[n_cams > 0] / n_cams[n_cams > 0]
    return cgm, n_cams > 0


def label_arrays(source: DistanceSource, q_ids: Any, g_ids: Any, q_cams: Any, g_cams: Any, junk_rule: str,
                 cgm: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ids and cameras as int64 arrays, checked against the source's shape and the junk rule (cameras 0 if none)."""
    if junk_rule not in JUNK_RULES:
        raise ValueError(f"unknown junk rule '{junk_rule}'; available: {', '.join(JUNK_RULES)}")
    q_ids, g_ids = as_int_array(q_ids), as_int_array(g_ids)
    Q, G = source.num_query, source.num_gallery
    if len(q_ids) != Q or len(g_ids) != G:
        raise ValueError(f"{len(q_ids)} query ids / {len(g_ids)} gallery ids for a {Q} x {G} distance matrix")
    needs_cams = junk_rule != "none" or cgm
    if needs_cams and (q_cams is None or g_cams is None):
        raise ValueError(f"junk rule '{junk_rule}' (or CGM) needs query and gallery camera ids")
    q_cams = as_int_array(q_cams) if q_cams is not None else np.zeros(Q, np.int64)
    g_cams = as_int_array(g_cams) if g_cams is not None else np.zeros(G, np.int64)
    return q_ids, g_ids, q_cams, g_cams


def remove_junk(dist: torch.Tensor, junk_rule: str, rows: np.ndarray, cols: np.ndarray, same_cam: np.ndarray,
                block_q_cams: np.ndarray, g_cams: torch.Tensor) -> np.ndarray:
    """Set a block's junk entries to +inf (excluded); returns which same-id pairs (rows, cols) stay positives.

    `same_cam[i]`: pair i is on the query's camera; `block_q_cams`: the cameras of the block's queries.
    """
    if junk_rule == "same_id_same_camera":
        dist[device_index(rows[same_cam], dist), device_index(cols[same_cam], dist)] = float("inf")
        return ~same_cam
    if junk_rule == "same_camera":
        g_cams = g_cams.to(dist.device)
        dist.masked_fill_(device_index(block_q_cams, dist)[:, None] == g_cams[None, :], float("inf"))
        return ~same_cam
    return np.ones(len(rows), bool)


def same_id_pairs(index: GalleryIndex, g_cams: np.ndarray, block_q_ids: np.ndarray,
                  block_q_cams: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(block row, gallery index, same camera?) of every same-id pair of a block of queries."""
    rows, cols = index.same_id(block_q_ids)
    return rows, cols, g_cams[cols] == block_q_cams[rows]


def positives_after_junk(dist: torch.Tensor, junk_rule: str, rows: np.ndarray, cols: np.ndarray,
                         same_cam: np.ndarray, block_q_cams: np.ndarray, g_cams: torch.Tensor,
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Junk set to +inf in `dist` (`remove_junk`); returns keep and the positives' rows, cols and distances."""
    keep = remove_junk(dist, junk_rule, rows, cols, same_cam, block_q_cams, g_cams)
    prow, pcol = rows[keep], cols[keep]
    return keep, prow, pcol, to_numpy(dist[device_index(prow, dist), device_index(pcol, dist)])


def summarise_queries(ap: np.ndarray, inp: np.ndarray, first: np.ndarray, num_gallery: int, max_rank: int,
                      **labels: Any) -> EvalResult:
    """The EvalResult of per-query AP, INP and first-positive rank (-1: no positive; such queries are skipped)."""
    valid = first >= 0
    n_valid = int(valid.sum())
    G = num_gallery
    max_rank = max(1, min(max_rank, G)) if G else max(1, max_rank)
    cmc = (first[valid][:, None] <= np.arange(max_rank)[None, :]).mean(0) if n_valid else np.zeros(max_rank)
    return EvalResult(
        mAP=float(ap[valid].mean()) if n_valid else 0.0, mINP=float(inp[valid].mean()) if n_valid else 0.0,
        cmc=cmc.astype(np.float64), num_queries=len(first), num_valid_queries=n_valid, average_precision=ap,
        first_match_rank=first, **labels,
    )


def evaluate_distances(source: DistanceSource, q_ids: Any, g_ids: Any, q_cams: Any = None, g_cams: Any = None,
                       junk_rule: str = "same_id_same_camera", max_rank: int = 50,
                       chunk_size: int | None = None, cgm: bool = False, metric: str = "euclidean",
                       rerank: str = "none", protocol: str = "custom", top_k: int = 0) -> EvalResult:
    """Metrics from any DistanceSource (features, a precomputed matrix, a re-ranker), one block at a time."""
    q_ids, g_ids, q_cams, g_cams = label_arrays(source, q_ids, g_ids, q_cams, g_cams, junk_rule, cgm)
    Q, G = source.num_query, source.num_gallery
    device = source_device(source)  # blocks, masks and counts stay where the source computes (a GPU too)
    chunk_size = chunk_size or auto_chunk_size(G, device=device)
    index = GalleryIndex(g_ids)
    g_cams_t = torch.from_numpy(g_cams).to(device)
    inf = float("inf")
    ap, inp, first = np.full(Q, np.nan), np.full(Q, np.nan), np.full(Q, -1, np.int64)
    cgm_q = np.full(Q, np.nan) if cgm else None
    buffer = torch.empty(min(chunk_size, Q), G, device=device) if Q else None
    top_k = min(top_k, G)
    ranked_idx, ranked_dist = np.zeros((Q, top_k), np.int64), np.zeros((Q, top_k), np.float32)
    for start, stop in track(iter_blocks(Q, chunk_size), "evaluating queries", Q, units=block_rows):
        B = stop - start
        dist = source.block(start, stop, out=buffer[:B])
        if top_k:  # the ranked list as a user sees it: every gallery item, by these (re-ranked) distances
            ranked_idx[start:stop], ranked_dist[start:stop] = topk_block(dist, top_k)
        rows, cols, same_cam = same_id_pairs(index, g_cams, q_ids[start:stop], q_cams[start:stop])
        source_junk = to_numpy(dist[device_index(rows[same_cam], dist), device_index(cols[same_cam], dist)]) \
            if cgm else None
        keep, prow, pcol, pos_dist = positives_after_junk(dist, junk_rule, rows, cols, same_cam,
                                                          q_cams[start:stop], g_cams_t)
        r, _, _, ranks = _rank_block(dist, prow, pcol, pos_dist, self_counted=True)
        a, i, f = _per_query(r, ranks, B)
        ap[start:stop], inp[start:stop], first[start:stop] = a, i, f
        if cgm:
            # CGM ranks positives against negatives only, in the list without junk removal.
            if junk_rule == "same_camera":
                dist = source.block(start, stop, out=buffer[:B])
            all_dist = np.empty(len(rows), np.float32)
            all_dist[keep] = pos_dist
            all_dist[~keep] = source_junk[: int((~keep).sum())]
            dist[device_index(rows, dist), device_index(cols, dist)] = inf
            cgm_q[start:stop], _ = _cgm_block(dist, rows, cols, all_dist, q_cams[start:stop], g_cams)
    result = summarise_queries(
        ap, inp, first, G, max_rank, junk_rule=junk_rule, metric=metric, rerank=rerank, protocol=protocol,
        ranked_indices=ranked_idx if top_k else None, ranked_distances=ranked_dist if top_k else None,
    )
    if cgm:
        scored = ~np.isnan(cgm_q)
        result.mCGM = float(cgm_q[scored].mean()) if scored.any() else 0.0
        result.num_cgm_queries = int(scored.sum())
    return result


def evaluate_features(qf: Any, gf: Any, q_ids: Any, g_ids: Any, q_cams: Any = None, g_cams: Any = None,
                      metric: str = "euclidean", **kwargs: Any) -> EvalResult:
    """Metrics from features without re-ranking (see `vreid.eval.evaluate` for re-ranking)."""
    return evaluate_distances(FeatureDistances(qf, gf, metric), q_ids, g_ids, q_cams, g_cams, metric=metric,
                              **kwargs)


def evaluate_distmat(distmat: Any, q_ids: Any, g_ids: Any, q_cams: Any = None, g_cams: Any = None,
                     **kwargs: Any) -> EvalResult:
    """Metrics from a precomputed Q x G distance matrix (numpy, tensor or np.memmap), read in blocks."""
    return evaluate_distances(MatrixDistances(distmat), q_ids, g_ids, q_cams, g_cams, **kwargs)


def cgm_from_ranked_list(query_id: int, query_cam: int, ranked_ids: Any, ranked_cams: Any) -> float | None:
    """CGM of one query from its full ranked gallery list (HRCN, ICCV 2021); None if no cross-camera positive.

    Each camera other than the query's that holds the query's vehicle scores the mean over its images of
    1 / (1 + negatives ranked above the image); CGM is the mean over those cameras. Same-camera positives
    are ignored (neither scored nor negatives).
    """
    ids, cams = as_int_array(ranked_ids), as_int_array(ranked_cams)
    negative = ids != query_id
    neg_before = np.cumsum(negative) - negative
    cross = (~negative) & (cams != query_cam)
    if not cross.any():
        return None
    scores = [np.mean(1.0 / (1.0 + neg_before[cross & (cams == c)])) for c in np.unique(cams[cross])]
    return float(np.mean(scores))
