"""The "weighted_parts" distance: rows that pack K part features with a weight each, scored part by part.

A packed row is `[K, w_1..w_K, f_1..f_K]`: the part count, K non-negative weights, then K features of equal width
D (the row is 1 + K + K*D wide). It stays a plain float row, so feature files, gallery stores and ONNX exports
carry it unchanged, and the row alone says how to read it. Between a query q and a gallery row g:

    d_k = |f_k(q)/|f_k(q)| - f_k(g)/|f_k(g)||^2          (each part L2-normalised, squared Euclidean)
    D(q, g) = sum_k w_k(q) w_k(g) d_k / max(sum_j w_j(q) w_j(g), 1e-12)

the area-weighted part distance of MUSP (Lee et al.): parts large in both images dominate. A block takes two matrix
products, the numerator sum_k w_k(q) w_k(g) d_k = [w(q) * s(q) | w(q) | -2 w(q) f(q)] . [w(g) | w(g) * s(g) | w(g) f(g)]
(s: the squared norms of the normalised parts, 1, or 0 for an all-zero part) and the denominator w(q) . w(g), a few
rows at a time; the gallery side of the first is built once per gallery (`gallery_state`).
"""
from __future__ import annotations

from typing import Any

import torch

from vreid.eval.distance import DISTANCES
from vreid.eval.errors import EvaluationError

#: below this, a pair of rows shares no weight (the official code's F.normalize(p=1) epsilon)
EPS = 1e-12
#: query rows whose denominators a block computes at once (a SHARED_ROWS x G temporary)
SHARED_ROWS = 64


def pack_parts(parts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B, 1 + K + K*D) rows from part features (B, K, D) and their weights (B, K)."""
    if weights.shape != parts.shape[:2]:
        raise ValueError(f"pack_parts: weights {tuple(weights.shape)} do not match parts {tuple(parts.shape)}")
    weights = weights.to(parts.dtype)
    count = torch.full_like(weights[:, :1], float(parts.shape[1]))   # no len(): ONNX keeps the batch axis dynamic
    return torch.cat([count, weights, parts.flatten(1)], dim=1)


def part_count(rows: torch.Tensor) -> int:
    """K of packed rows; EvaluationError if the rows are not a valid packing (names the fix)."""
    if rows.ndim != 2 or rows.shape[1] < 3:
        raise EvaluationError(f"weighted_parts: expected packed rows [K, weights, parts], got shape "
                              f"{tuple(rows.shape)}; this metric is for methods that pack parts (e.g. musp)")
    if rows.shape[0] == 0:
        return 1
    heads = rows[:, 0]
    k = float(heads[0])
    if k != round(k) or k < 1 or not bool((heads == k).all()):
        raise EvaluationError("weighted_parts: the first column of every row must hold the same part count K; "
                              "these rows were not made by a method that packs parts (set eval.metric to "
                              "euclidean or cosine for plain features)")
    k = int(k)
    width = rows.shape[1] - 1 - k
    if width <= 0 or width % k:
        raise EvaluationError(f"weighted_parts: rows of width {rows.shape[1]} cannot hold {k} weights and {k} "
                              f"equal parts (1 + K + K*D columns)")
    return k


def unpack_parts(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(parts (N, K, D), weights (N, K)) views of packed rows."""
    k = part_count(rows)
    return rows[:, 1 + k:].reshape(len(rows), k, -1), rows[:, 1:1 + k]


class WeightedPartDistance:
    """Area-weighted part distance over packed rows. Prepared rows are `[K | w | w*s | w*f_hat]` (w: the weights,
    s: the squared norms of the normalised parts, f_hat: the normalised parts), N x (1 + 2K + K*D)."""

    vector = False

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        parts, weights = unpack_parts(x)
        if bool((weights < 0).any()):
            raise EvaluationError("weighted_parts: part weights must be >= 0 (columns 1..K of each row)")
        unit = torch.nn.functional.normalize(parts, dim=2)
        sq = unit.pow(2).sum(2)
        return torch.cat([x[:, :1], weights, weights * sq, (weights.unsqueeze(2) * unit).reshape(len(x), -1)], 1)

    def gallery_state(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The gallery side of the block product, `[w | w*s | w*f_hat]`, and the weights w (built once)."""
        wg, wsg, fg = self._split(g)
        return torch.cat([wg, wsg, fg], dim=1), wg

    @staticmethod
    def _split(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(w, w*s, w*f_hat) of prepared rows."""
        k = int(p[0, 0]) if len(p) else 1
        return p[:, 1:1 + k], p[:, 1 + k:1 + 2 * k], p[:, 1 + 2 * k:]

    def block(self, q: torch.Tensor, g: torch.Tensor, state: Any = None, out: torch.Tensor | None = None
              ) -> torch.Tensor:
        right, wg = state if state is not None else self.gallery_state(g)
        wq, wsq, fq = self._split(q)
        left = torch.cat([wsq, wq, fq * -2.0], dim=1)
        out = torch.mm(left, right.T, out=out) if out is not None else torch.mm(left, right.T)
        out.clamp_(min=0.0)
        for r in range(0, len(q), SHARED_ROWS):   # the denominator a few rows at a time: no second B x G buffer
            out[r:r + SHARED_ROWS].div_(torch.mm(wq[r:r + SHARED_ROWS], wg.T).clamp_(min=EPS))
        return out

    def pairs(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        (wa, wsa, fa), (wb, wsb, fb) = self._split(a), self._split(b)
        num = (wsa * wb).sum(1) + (wa * wsb).sum(1) - 2.0 * (fa * fb).sum(1)
        return num.clamp_(min=0.0) / (wa * wb).sum(1).clamp_(min=EPS)


DISTANCES.register("weighted_parts")(WeightedPartDistance())
