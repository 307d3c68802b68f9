"""Verification metrics: ROC of (query, gallery) pairs, TPR at fixed FPR and AUC, counted exactly in query blocks.

A pair is positive when both images show the same vehicle and negative otherwise; the junk rule removes the
pairs it removes from the ranked lists. At threshold t a pair is accepted when its distance is <= t (score =
-distance, as in FastReID's roc.py). No Q x G pair array is built: one pass keeps the positive distances
(O(#positives) memory), a second counts every negative against them with `searchsorted`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from vreid.eval.distance import DistanceSource, auto_chunk_size, device_index, iter_blocks, source_device, to_numpy
from vreid.eval.errors import EvaluationError
from vreid.eval.metrics import GalleryIndex, label_arrays, remove_junk, same_id_pairs
from vreid.progress import block_rows, track

#: The FPRs whose TPR is reported (FastReID's TPR@FPR).
FPR_TARGETS = (1e-4, 1e-3, 1e-2)

#: FPRs the stored curve is sampled at: log-spaced (the low-FPR end, for a log axis) and linear.
CURVE_FPRS = np.unique(np.concatenate([np.logspace(-6, 0, 121), np.linspace(0.0, 1.0, 81)]))

#: Bytes per block element the negatives pass needs: the float32 block, two int32 searchsorted results, a mask.
_BYTES_PER_ELEMENT = 16


def fpr_text(fpr: float) -> str:
    """An FPR target as written in keys and labels: 1e-4 -> '1e-4'."""
    mantissa, exponent = f"{fpr:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def tpr_key(fpr: float) -> str:
    """The results.json key of TPR at `fpr`, e.g. 'tpr@fpr=1e-4'."""
    return f"tpr@fpr={fpr_text(fpr)}"


@dataclass
class PairCounts:
    """Exact counts behind the ROC, at each distinct positive distance `distances[k]` (ascending).

    `pos_below[k]` / `pos_upto[k]`: positives at distance < / <= distances[k]; `neg_below`, `neg_upto` alike.
    """

    distances: np.ndarray
    pos_below: np.ndarray
    pos_upto: np.ndarray
    neg_below: np.ndarray
    neg_upto: np.ndarray
    num_positive: int
    num_negative: int

    def roc_points(self) -> tuple[np.ndarray, np.ndarray]:
        """(fpr, tpr) of every corner of the ROC from (0, 0) to (1, 1); the curve is straight between them."""
        fp = np.concatenate([[0], np.stack([self.neg_below, self.neg_upto], 1).reshape(-1), [self.num_negative]])
        tp = np.concatenate([[0], np.stack([self.pos_below, self.pos_upto], 1).reshape(-1), [self.num_positive]])
        return fp / self.num_negative, tp / self.num_positive

    def tpr_at(self, fprs: Sequence[float] | np.ndarray) -> np.ndarray:
        """Per target: the highest TPR of a threshold whose FPR is <= the target (0 if none accepts a positive)."""
        # A best threshold sits at a positive distance: moving it up to the next one only adds negatives.
        fpr = self.neg_upto / self.num_negative
        taken = np.searchsorted(fpr, np.asarray(fprs, np.float64), side="right")
        return np.concatenate([[0], self.pos_upto])[taken] / self.num_positive

    def auc(self) -> float:
        """Area under the ROC = P(negative farther than positive) + P(tie) / 2, from integer counts."""
        per_distance = np.diff(np.concatenate([[0], self.pos_upto]))
        # each positive at distances[k] wins against negatives beyond it and half-wins against ties
        twice_wins = per_distance * (2 * self.num_negative - self.neg_below - self.neg_upto)
        return float(int(twice_wins.sum()) / (2 * self.num_positive * self.num_negative))


@dataclass
class VerificationResult:
    """TPR at FPR_TARGETS, the AUC, and the curve sampled at CURVE_FPRS (TPR as in `PairCounts.tpr_at`)."""

    tpr_at_fpr: dict[float, float]
    auc: float
    curve_fpr: np.ndarray
    curve_tpr: np.ndarray
    num_positive: int
    num_negative: int

    def summary(self) -> dict[str, float]:
        """TPR@FPR values and the AUC under their results.json keys."""
        return {**{tpr_key(f): float(t) for f, t in self.tpr_at_fpr.items()}, "roc_auc": float(self.auc)}

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(),
                "roc_curve": {"fpr": [float(v) for v in self.curve_fpr], "tpr": [float(v) for v in self.curve_tpr]},
                "roc_pairs": {"positive": self.num_positive, "negative": self.num_negative}}


def _junk_free_blocks(source: DistanceSource, q_ids: np.ndarray, q_cams: np.ndarray, g_cams: np.ndarray,
                      index: GalleryIndex, junk_rule: str, chunk_size: int,
                      what: str) -> Iterator[tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]]:
    """(block with junk at +inf, same-id rows, same-id cols, which of them are kept positives) per query block."""
    Q, G = source.num_query, source.num_gallery
    device = source_device(source)
    buffer = torch.empty(min(chunk_size, Q), G, device=device)
    g_cams_t = torch.from_numpy(g_cams).to(device)
    for start, stop in track(iter_blocks(Q, chunk_size), what, Q, units=block_rows):
        dist = source.block(start, stop, out=buffer[: stop - start])
        rows, cols, same_cam = same_id_pairs(index, g_cams, q_ids[start:stop], q_cams[start:stop])
        keep = remove_junk(dist, junk_rule, rows, cols, same_cam, q_cams[start:stop], g_cams_t)
        yield dist, rows, cols, keep


def count_pairs(source: DistanceSource, q_ids: Any, g_ids: Any, q_cams: Any = None, g_cams: Any = None,
                junk_rule: str = "same_id_same_camera", chunk_size: int | None = None) -> PairCounts:
    """Exact positive and negative pair counts at every distinct positive distance; reads `source` twice.

    Positives come from the first read and negatives from the second, so the source must give the same blocks
    both times (a deterministic one, read with the same block sizes).
    """
    q_ids, g_ids, q_cams, g_cams = label_arrays(source, q_ids, g_ids, q_cams, g_cams, junk_rule)
    chunk_size = chunk_size or auto_chunk_size(source.num_gallery, _BYTES_PER_ELEMENT, device=source_device(source))
    block_args = (source, q_ids, q_cams, g_cams, GalleryIndex(g_ids), junk_rule, chunk_size)
    positives = [to_numpy(dist[device_index(rows[keep], dist), device_index(cols[keep], dist)])
                 for dist, rows, cols, keep in _junk_free_blocks(*block_args, "ROC: positive pairs")]
    distances, counts = np.unique(np.concatenate(positives) if positives else np.zeros(0, np.float32),
                                  return_counts=True)
    if len(distances) == 0:
        raise EvaluationError(f"ROC: no positive pair is left under junk rule '{junk_rule}'")
    thresholds = torch.from_numpy(distances).to(source_device(source))
    # code = #{u < d} + #{u <= d}: 2k for a distance strictly between u[k-1] and u[k], 2k + 1 for d == u[k]
    # (+inf, i.e. junk and same-id entries, lands on 2m with the negatives beyond the last positive).
    hist = np.zeros(2 * len(distances) + 1, np.int64)
    num_negative = 0
    for dist, rows, cols, _ in _junk_free_blocks(*block_args, "ROC: negative pairs"):
        dist[device_index(rows, dist), device_index(cols, dist)] = float("inf")  # positives are not negatives
        num_negative += int(torch.isfinite(dist).sum())
        code = torch.searchsorted(thresholds, dist, out_int32=True)
        code.add_(torch.searchsorted(thresholds, dist, right=True, out_int32=True))
        hist += to_numpy(torch.bincount(code.view(-1), minlength=len(hist)))
    if num_negative == 0:
        raise EvaluationError("ROC: no negative pair (every query and gallery image shows the same vehicle)")
    upto = np.cumsum(hist[:-1])
    pos_upto = np.cumsum(counts)
    return PairCounts(distances=distances, pos_below=pos_upto - counts, pos_upto=pos_upto, neg_below=upto[0::2],
                      neg_upto=upto[1::2], num_positive=int(pos_upto[-1]), num_negative=num_negative)


def verify_distances(source: DistanceSource, q_ids: Any, g_ids: Any, q_cams: Any = None, g_cams: Any = None,
                     junk_rule: str = "same_id_same_camera", chunk_size: int | None = None,
                     fprs: Sequence[float] = FPR_TARGETS) -> VerificationResult:
    """TPR@FPR, AUC and a sampled ROC of the (query, gallery) pairs of any DistanceSource, in query blocks."""
    counts = count_pairs(source, q_ids, g_ids, q_cams, g_cams, junk_rule=junk_rule, chunk_size=chunk_size)
    return VerificationResult(
        tpr_at_fpr=dict(zip(fprs, counts.tpr_at(fprs).tolist())), auc=counts.auc(), curve_fpr=CURVE_FPRS.copy(),
        curve_tpr=counts.tpr_at(CURVE_FPRS), num_positive=counts.num_positive, num_negative=counts.num_negative)


def mean_verification(results: Sequence[VerificationResult]) -> VerificationResult:
    """The mean over results of every TPR and the AUC (e.g. VehicleID's gallery draws); pair counts of the first."""
    first = results[0]
    return VerificationResult(
        tpr_at_fpr={f: float(np.mean([r.tpr_at_fpr[f] for r in results])) for f in first.tpr_at_fpr},
        auc=float(np.mean([r.auc for r in results])), curve_fpr=first.curve_fpr,
        curve_tpr=np.mean([r.curve_tpr for r in results], axis=0), num_positive=first.num_positive,
        num_negative=first.num_negative)
