"""k-reciprocal encoding re-ranking (Zhong et al., CVPR 2017), exact but sparse: O(N k) memory, no N x N array.

Same numbers as the published dense routine `re_ranking(q_g, q_q, g_g, k1, k2, lambda)` fed Euclidean
distances: it squares them and divides each row of the (Q+G) x (Q+G) matrix by the row's maximum; V rows
hold exp(-d) over the expanded k-reciprocal set; V is averaged over each item's k2 nearest neighbours;
the Jaccard term only needs pairs whose V supports overlap, so it is summed over shared columns only.
Everything is torch on the features' device (CUDA tensors stay on the GPU), one code path for all devices.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch

from vreid.eval.distance import RowDistance, auto_chunk_size, iter_blocks, row_distance
from vreid.progress import track
from vreid.rerank.knn import BlockHook, feature_device, knn_by_distance, knn_tensors, prepare_on_device


def _reciprocal(neighbours: torch.Tensor, width: int, block: int = 8192) -> torch.Tensor:
    """mask[i, m]: i is among the first `width` neighbours of its own m-th neighbour."""
    n = len(neighbours)
    fwd = neighbours[:, :width]
    mask = torch.empty(fwd.shape, dtype=torch.bool, device=fwd.device)
    for s in range(0, n, block):
        f = fwd[s:s + block]
        own = torch.arange(s, s + len(f), device=fwd.device)[:, None, None]
        mask[s:s + block] = (fwd[f] == own).any(-1)
    return mask


@dataclass
class SparseRows:
    """A sparse matrix as (row, col, value) triplets sorted by (row, col): CSR in plain tensors, any device."""

    rows: torch.Tensor
    cols: torch.Tensor
    vals: torch.Tensor
    num_rows: int

    @cached_property
    def row_ptr(self) -> torch.Tensor:
        """Start of each row's entries (num_rows + 1)."""
        return torch.searchsorted(self.rows, torch.arange(self.num_rows + 1, device=self.rows.device))

    def take_rows(self, start: int, stop: int) -> SparseRows:
        """Rows start..stop, renumbered from 0."""
        a, b = torch.searchsorted(self.rows, torch.tensor([start, stop], device=self.rows.device)).tolist()
        return SparseRows(self.rows[a:b] - start, self.cols[a:b], self.vals[a:b], stop - start)


def sorted_unique(keys: torch.Tensor) -> torch.Tensor:
    """Sorted distinct values of an int64 tensor (a sort and a neighbour compare)."""
    return torch.unique_consecutive(torch.sort(keys).values)


def _pair_sqdist(x: torch.Tensor, sq: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, nn_dist: torch.Tensor,
                 nn_idx: torch.Tensor, block: int = 1 << 12, distance: RowDistance | None = None) -> torch.Tensor:
    """Squared distances of (row, col) pairs: looked up in either item's kNN list, the rest computed (by
    `distance.pairs` for a distance that is not a vector one)."""
    n = len(nn_idx)
    nn_keys = (torch.arange(n, device=x.device)[:, None] * n + nn_idx).view(-1)
    nn_keys, order = torch.sort(nn_keys)
    nn_vals = nn_dist.reshape(-1)[order]
    out = torch.empty(len(rows), device=x.device)
    missing = torch.ones(len(rows), dtype=torch.bool, device=x.device)
    for keys in (rows * n + cols, cols * n + rows):              # (i, j) in i's list, or (j, i) in j's
        at = torch.searchsorted(nn_keys, keys).clamp_(max=len(nn_keys) - 1)
        hit = missing & (nn_keys[at] == keys)
        out[hit] = nn_vals[at[hit]]
        missing &= ~hit
    rest = torch.nonzero(missing).view(-1)
    for s in range(0, len(rest), block):                         # small blocks: no large temporaries
        at = rest[s:s + block]
        r, c = rows[at], cols[at]
        if distance is not None:
            out[at] = distance.pairs(x[r], x[c])
            continue
        dot = (x[r] * x[c]).sum(1)
        out[at] = (sq[r] + sq[c] - 2 * dot).clamp_(min=0)
    return out


def expansion_sets(neighbours: torch.Tensor, k1: int, block: int = 1 << 15) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) pairs of each item's k-reciprocal set R(i, k1) grown by the R(c, k1/2) of its members c
    that share more than 2/3 of their items with R(i, k1); unique and sorted by (row, column)."""
    neighbours = torch.as_tensor(neighbours)
    n = len(neighbours)
    half = int(np.around(k1 / 2.0)) + 1
    fwd, hfwd = neighbours[:, :k1 + 1], neighbours[:, :half]
    recip, hrecip = _reciprocal(neighbours, k1 + 1), _reciprocal(neighbours, half)
    rows, pos = torch.nonzero(recip, as_tuple=True)   # the pairs (i, c), c in R(i, k1)
    cols = fwd[rows, pos]
    keys = [rows * n + cols]
    members = torch.where(recip, fwd, -1)            # R(i, k1), padded with -1
    for s in track(range(0, len(rows), block), "k-reciprocal expansion (blocks)"):
        i, c = rows[s:s + block], cols[s:s + block]
        cand, cand_mask = hfwd[c], hrecip[c]         # R(c, k1/2) = cand[cand_mask]
        inside = (cand[:, :, None] == members[i][:, None, :]).any(-1) & cand_mask
        accept = 3 * inside.sum(1) > 2 * cand_mask.sum(1)             # |R(c) ∩ R(i)| > 2/3 |R(c)|
        keys.append((i[:, None] * n + cand)[accept[:, None] & cand_mask])
    flat = sorted_unique(torch.cat(keys))
    return flat // n, flat % n


def neighbour_mean(v: SparseRows, neighbours: torch.Tensor) -> SparseRows:
    """Row i := mean of the rows of v at `neighbours[i]` (N x k2), summed in neighbour-index order."""
    n, k2 = neighbours.shape
    device = neighbours.device
    ptr = v.row_ptr
    src = torch.sort(neighbours, dim=1).values.reshape(-1)       # the index order scipy's product summed in
    counts = ptr[src + 1] - ptr[src]
    pair = torch.repeat_interleave(torch.arange(n * k2, device=device), counts)
    starts = torch.cumsum(counts, 0) - counts
    pos = ptr[src][pair] + torch.arange(len(pair), device=device) - starts[pair]
    out_rows = pair // k2
    keys = out_rows * n + v.cols[pos]
    keys, order = torch.sort(keys, stable=True)                  # stable: each key's terms stay in that order
    terms = v.vals[pos][order] * torch.tensor(1.0 / k2, dtype=torch.float32)
    flat, slot = torch.unique_consecutive(keys, return_inverse=True)
    sums = torch.zeros(len(flat), device=device).index_add_(0, slot, terms)
    keep = sums != 0
    return SparseRows(flat[keep] // n, flat[keep] % n, sums[keep], n)


@dataclass
class KReciprocalState:
    """What the query-block step needs: features, row maxima and the sparse encodings V."""

    x: torch.Tensor
    sq: torch.Tensor
    row_max: torch.Tensor
    num_query: int
    v_query: SparseRows          # Q x N, by row
    v_gallery: SparseRows        # N x G transposed: rows are the columns c, cols the gallery item
    lambda_value: float
    #: the registered distance of the original term when it is not the squared Euclidean one of `x`
    distance: RowDistance | None = None


def _keep_query_gallery(out: torch.Tensor, num_query: int) -> BlockHook:
    """A kNN block hook that copies the query x gallery part of each block into `out` (Q x G)."""
    def hook(r0: int, r1: int, c0: int, c1: int, d: torch.Tensor) -> None:
        r1, c0 = min(r1, num_query), max(c0, num_query)
        if r0 < r1 and c0 < c1:
            out[r0:r1, c0 - num_query:c1 - num_query] = d[: r1 - r0, c0 - (c1 - d.shape[1]):]
    return hook


def by_column(v: SparseRows, first_row: int, num_cols: int) -> SparseRows:
    """Rows first_row.. of v, transposed: (column, row - first_row) sorted by column, then row."""
    part = v.take_rows(first_row, v.num_rows)
    order = torch.sort(part.cols * part.num_rows + part.rows).indices
    return SparseRows(part.cols[order], part.rows[order], part.vals[order], num_cols)


def encode(x: torch.Tensor, num_query: int, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
           knn_backend: str = "torch", knn_options: dict[str, Any] | None = None,
           query_gallery: torch.Tensor | None = None, distance: RowDistance | None = None) -> KReciprocalState:
    """Sparse V (after local query expansion) for all N = Q + G rows of `x` (queries first), on x's device.

    `query_gallery` (Q x G float32, torch backend only) receives the squared query-gallery distances of
    the kNN pass, so that they need not be computed again. `distance`: a registered distance that is not a
    vector one (its values stand for the squared distances; exact kNN by its blocks, torch backend only);
    None: squared Euclidean between the rows of `x`.
    """
    n = x.shape[0]
    k = max(k1 + 1, k2)
    options = dict(knn_options or {})
    if query_gallery is not None:
        options["on_block"] = _keep_query_gallery(query_gallery, num_query)
    if distance is None:
        nn_dist, neighbours, row_max = knn_tensors(x, k, knn_backend, with_row_max=True, **options)
    else:
        if knn_backend != "torch":
            raise ValueError(f"knn_backend {knn_backend!r}: faiss indexes rank by Euclidean or inner-product "
                             "distance only; re-ranking by this distance needs knn_backend=torch")
        nn_dist, neighbours, row_max = knn_by_distance(x, k, distance, with_row_max=True,
                                                       on_block=options.get("on_block"))
    sq = x.pow(2).sum(1)
    rows, cols = expansion_sets(neighbours, k1)
    weight = torch.exp(-(_pair_sqdist(x, sq, rows, cols, nn_dist, neighbours, distance=distance) / row_max[rows]))
    totals = torch.zeros(n, dtype=torch.float64, device=x.device).index_add_(0, rows, weight.double()).float()
    v = SparseRows(rows, cols, weight / totals[rows], n)
    if k2 != 1:  # V_i := mean of V over the k2 nearest neighbours of i
        v = neighbour_mean(v, neighbours[:, :k2])
    return KReciprocalState(x=x, sq=sq, row_max=row_max, num_query=num_query,
                            v_query=v.take_rows(0, num_query), v_gallery=by_column(v, num_query, n),
                            lambda_value=lambda_value, distance=distance)


def shared_mass(state: KReciprocalState, start: int, stop: int, out: torch.Tensor) -> torch.Tensor:
    """out[b, j] = sum_c min(V[start+b, c], V[Q+j, c]) for a block of query rows (B x G)."""
    vq, vg = state.v_query.take_rows(start, stop), state.v_gallery
    G = out.shape[1]
    out.zero_()
    flat_out = out.view(-1)
    colptr = vg.row_ptr
    counts = colptr[vq.cols + 1] - colptr[vq.cols]
    step = max(1, int(1e6 // max(1.0, counts.float().mean().item() if len(counts) else 1.0)))  # ~1M triplets
    for s in range(0, len(counts), step):
        c = counts[s:s + step]
        rep = torch.repeat_interleave(torch.arange(s, s + len(c), device=c.device), c)
        offsets = torch.arange(len(rep), device=c.device) - torch.repeat_interleave(torch.cumsum(c, 0) - c, c)
        pos = colptr[vq.cols[rep]] + offsets
        mins = torch.minimum(vq.vals[rep], vg.vals[pos])
        flat_out.index_add_(0, vq.rows[rep] * G + vg.cols[pos], mins)
    return out


class KReciprocalDistances:
    """Re-ranked Q x G distances produced one block of queries at a time (a DistanceSource), on the device
    of the features.

    `query_gallery`: a Q x G float32 array or tensor the kNN pass fills with squared distances (torch
    backend), read back by `block` instead of computing them again; `block(out=...)` may write over it, row
    for row.
    """

    def __init__(self, qf: Any, gf: Any, metric: str = "euclidean", k1: int = 20, k2: int = 6,
                 lambda_value: float = 0.3, knn_backend: str = "torch",
                 knn_options: dict[str, Any] | None = None, query_gallery: Any = None) -> None:
        q, g = prepare_on_device(qf, gf, metric)
        distance = row_distance(metric)
        self.num_query, self.num_gallery = q.shape[0], g.shape[0]
        self.device = q.device  # callers allocate their block buffers here
        self.query_gallery = torch.as_tensor(query_gallery) if knn_backend == "torch" and query_gallery is not None \
            else None
        self.state = encode(torch.cat([q, g]), q.shape[0], k1, k2, lambda_value, knn_backend, knn_options,
                            self.query_gallery, None if distance.vector else distance)
        self._scratch = torch.empty(0, device=q.device)
        self._gallery_state = None

    def block(self, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        st, Q = self.state, self.num_query
        B = stop - start
        if self._scratch.numel() < B * self.num_gallery:
            self._scratch = torch.empty(B * self.num_gallery, device=st.x.device)
        overlap = shared_mass(st, start, stop, self._scratch[: B * self.num_gallery].view(B, self.num_gallery))
        jaccard = overlap.div_(overlap.neg().add_(2.0)).neg_().add_(1.0)   # 1 - m / (2 - m)
        scale = st.lambda_value / st.row_max[start:stop, None]
        if self.query_gallery is not None:     # elementwise, so `out` may be these very rows
            rows = self.query_gallery[start:stop].to(scale.device)
            out = torch.mul(rows, scale, out=out)
        elif st.distance is not None:
            if self._gallery_state is None:   # built once: for weighted_parts, the gallery side of its product
                self._gallery_state = st.distance.gallery_state(st.x[Q:])
            out = st.distance.block(st.x[start:stop], st.x[Q:], self._gallery_state, out).mul_(scale)
        else:
            x = st.x
            out = torch.addmm(st.sq[Q:].unsqueeze(0), x[start:stop], x[Q:].T, alpha=-2.0, out=out)
            out.add_(st.sq[start:stop, None]).mul_(scale)
        return out.clamp_(min=0).add_(jaccard, alpha=1 - st.lambda_value)


def k_reciprocal(qf: Any, gf: Any, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                 metric: str = "euclidean", knn_backend: str = "torch", chunk_size: int | None = None,
                 knn_options: dict[str, Any] | None = None) -> np.ndarray:
    """The Q x G k-reciprocal re-ranked distance matrix (float32), computed sparsely on the features' device.

    Equals the published `re_ranking(q_g, q_q, g_g, k1, k2, lambda_value)` applied to Euclidean distances
    between the features (between L2-normalised features for metric="cosine"). For galleries whose Q x G
    matrix does not fit, evaluate through `KReciprocalDistances` (vreid.eval.evaluate(rerank="kreciprocal")).
    """
    num_query, num_gallery = len(qf), len(gf)
    # the kNN pass writes the distances here first
    out = torch.empty((num_query, num_gallery), device=feature_device(qf))
    source = KReciprocalDistances(qf, gf, metric, k1, k2, lambda_value, knn_backend, knn_options, out)
    chunk = chunk_size or auto_chunk_size(num_gallery, 4, budget=1 << 25)
    for start, stop in iter_blocks(num_query, chunk):
        source.block(start, stop, out=out[start:stop])
    return out.cpu().numpy()
