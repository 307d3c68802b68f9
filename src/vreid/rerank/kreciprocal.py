"""k-reciprocal encoding re-ranking (Zhong et al., CVPR 2017), exact but sparse: O(N k) memory, no N x N array.

Same numbers as the published dense routine `re_ranking(q_g, q_q, g_g, k1, k2, lambda)` fed Euclidean
distances: it squares them and divides each row of the (Q+G) x (Q+G) matrix by the row's maximum; V rows
hold exp(-d) over the expanded k-reciprocal set; V is averaged over each item's k2 nearest neighbours;
the Jaccard term only needs pairs whose V supports overlap, so it is summed over shared columns only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from vreid.eval.distance import auto_chunk_size, iter_blocks, prepare_features
from vreid.progress import track
from vreid.rerank.knn import BlockHook, knn


def _reciprocal(neighbours: np.ndarray, width: int, block: int = 8192) -> np.ndarray:
    """mask[i, m]: i is among the first `width` neighbours of its own m-th neighbour."""
    n = len(neighbours)
    fwd = neighbours[:, :width]
    mask = np.empty(fwd.shape, bool)
    for s in range(0, n, block):
        f = fwd[s:s + block]
        mask[s:s + block] = (fwd[f] == np.arange(s, s + len(f))[:, None, None]).any(-1)
    return mask


def _pair_sqdist(x: torch.Tensor, sq: torch.Tensor, rows: np.ndarray, cols: np.ndarray, nn_dist: np.ndarray,
                 nn_idx: np.ndarray, block: int = 1 << 12) -> np.ndarray:
    """Squared distances of (row, col) pairs: looked up in either item's kNN list, the rest computed."""
    n = len(nn_idx)
    nn_keys = (np.arange(n)[:, None] * n + nn_idx).ravel()
    order = np.argsort(nn_keys)
    nn_keys, nn_vals = nn_keys[order], nn_dist.ravel()[order]
    out = np.empty(len(rows), np.float32)
    missing = np.ones(len(rows), bool)
    for keys in (rows * n + cols, cols * n + rows):              # (i, j) in i's list, or (j, i) in j's
        at = np.minimum(np.searchsorted(nn_keys, keys), len(nn_keys) - 1)
        hit = missing & (nn_keys[at] == keys)
        out[hit] = nn_vals[at[hit]]
        missing &= ~hit
    rest = np.flatnonzero(missing)
    for s in range(0, len(rest), block):                         # small blocks: no large temporaries
        r, c = torch.from_numpy(rows[rest[s:s + block]]), torch.from_numpy(cols[rest[s:s + block]])
        dot = (x[r] * x[c]).sum(1)
        out[rest[s:s + block]] = (sq[r] + sq[c] - 2 * dot).clamp_(min=0).numpy()
    return out


def expansion_sets(neighbours: np.ndarray, k1: int, block: int = 1 << 15) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) pairs of each item's k-reciprocal set R(i, k1) grown by the R(c, k1/2) of its members c
    that share more than 2/3 of their items with R(i, k1); unique and sorted by (row, column)."""
    n = len(neighbours)
    half = int(np.around(k1 / 2.0)) + 1
    fwd, hfwd = neighbours[:, :k1 + 1], neighbours[:, :half]
    recip, hrecip = _reciprocal(neighbours, k1 + 1), _reciprocal(neighbours, half)
    rows, pos = np.nonzero(recip)                 # the pairs (i, c), c in R(i, k1)
    cols = fwd[rows, pos]
    keys = [rows * n + cols]
    members = np.where(recip, fwd, -1)            # R(i, k1), padded with -1
    for s in track(range(0, len(rows), block), "k-reciprocal expansion (blocks)"):
        i, c = rows[s:s + block], cols[s:s + block]
        cand, cand_mask = hfwd[c], hrecip[c]      # R(c, k1/2) = cand[cand_mask]
        inside = (cand[:, :, None] == members[i][:, None, :]).any(-1) & cand_mask
        accept = 3 * inside.sum(1) > 2 * cand_mask.sum(1)             # |R(c) ∩ R(i)| > 2/3 |R(c)|
        keys.append((i[:, None] * n + cand)[accept[:, None] & cand_mask])
    flat = np.sort(np.concatenate(keys))
    flat = flat[np.concatenate([[True], flat[1:] != flat[:-1]])]   # unique; faster here than np.unique's hash
    return flat // n, flat % n


@dataclass
class KReciprocalState:
    """What the query-block step needs: features, row maxima and the sparse encodings V."""

    x: torch.Tensor
    sq: torch.Tensor
    row_max: torch.Tensor
    num_query: int
    v_query: sp.csr_matrix       # Q x N
    v_gallery: sp.csc_matrix     # G x N, by column
    lambda_value: float


def _keep_query_gallery(out: np.ndarray, num_query: int) -> BlockHook:
    """A kNN block hook that copies the query x gallery part of each block into `out` (Q x G)."""
    def hook(r0: int, r1: int, c0: int, c1: int, d: torch.Tensor) -> None:
        r1, c0 = min(r1, num_query), max(c0, num_query)
        if r0 < r1 and c0 < c1:
            out[r0:r1, c0 - num_query:c1 - num_query] = d.numpy()[: r1 - r0, c0 - (c1 - d.shape[1]):]
    return hook


def encode(x: torch.Tensor, num_query: int, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
           knn_backend: str = "torch", knn_options: dict[str, Any] | None = None,
           query_gallery: np.ndarray | None = None) -> KReciprocalState:
    """Sparse V (after local query expansion) for all N = Q + G rows of `x` (queries first).

    `query_gallery` (Q x G float32, torch backend only) receives the squared query-gallery distances of
    the kNN pass, so that they need not be computed again.
    """
    n = x.shape[0]
    k = max(k1 + 1, k2)
    options = dict(knn_options or {})
    if query_gallery is not None:
        options["on_block"] = _keep_query_gallery(query_gallery, num_query)
    nn_dist, neighbours, row_max = knn(x, k, knn_backend, with_row_max=True, **options)
    sq = x.pow(2).sum(1)
    rows, cols = expansion_sets(neighbours, k1)
    d = _pair_sqdist(x, sq, rows, cols, nn_dist, neighbours) / row_max[rows]
    weight = np.exp(-d)
    totals = np.bincount(rows, weights=weight, minlength=n).astype(np.float32)
    v = sp.csr_matrix(((weight / totals[rows]).astype(np.float32), (rows, cols)), shape=(n, n))
    if k2 != 1:  # V_i := mean of V over the k2 nearest neighbours of i
        qe_rows = np.repeat(np.arange(n), k2)
        avg = sp.csr_matrix((np.full(n * k2, 1.0 / k2, np.float32), (qe_rows, neighbours[:, :k2].ravel())),
                            shape=(n, n))
        v = (avg @ v).tocsr()
        v.eliminate_zeros()
    return KReciprocalState(x=x, sq=sq, row_max=torch.from_numpy(row_max), num_query=num_query,
                            v_query=v[:num_query].tocsr(), v_gallery=v[num_query:].tocsc(),
                            lambda_value=lambda_value)


def shared_mass(state: KReciprocalState, start: int, stop: int, out: torch.Tensor) -> torch.Tensor:
    """out[b, j] = sum_c min(V[start+b, c], V[Q+j, c]) for a block of query rows (B x G)."""
    vq, vg = state.v_query[start:stop].tocoo(), state.v_gallery
    G = vg.shape[0]
    out.zero_()
    flat_out = out.view(-1)
    colptr = vg.indptr
    counts = colptr[vq.col + 1] - colptr[vq.col]
    step = max(1, int(1e6 // max(1, counts.mean() if len(counts) else 1)))  # ~1M triplets at a time
    for s in range(0, len(counts), step):
        c = counts[s:s + step]
        rep = np.repeat(np.arange(s, s + len(c)), c)
        offsets = np.arange(c.sum()) - np.repeat(np.cumsum(c) - c, c)
        pos = colptr[vq.col[rep]] + offsets
        mins = np.minimum(vq.data[rep], vg.data[pos])
        target = vq.row[rep].astype(np.int64) * G + vg.indices[pos]
        flat_out.index_add_(0, torch.from_numpy(target), torch.from_numpy(mins))
    return out


class KReciprocalDistances:
    """Re-ranked Q x G distances produced one block of queries at a time (a DistanceSource).

    `query_gallery`: a Q x G float32 array the kNN pass fills with squared distances (torch backend), read
    back by `block` instead of computing them again; `block(out=...)` may write over it, row for row.
    """

    def __init__(self, qf: Any, gf: Any, metric: str = "euclidean", k1: int = 20, k2: int = 6,
                 lambda_value: float = 0.3, knn_backend: str = "torch",
                 knn_options: dict[str, Any] | None = None, query_gallery: np.ndarray | None = None) -> None:
        q, g = prepare_features(qf, gf, metric)
        self.num_query, self.num_gallery = q.shape[0], g.shape[0]
        self.query_gallery = query_gallery if knn_backend == "torch" else None
        self.state = encode(torch.cat([q, g]), q.shape[0], k1, k2, lambda_value, knn_backend, knn_options,
                            self.query_gallery)
        self._scratch = torch.empty(0)

    def block(self, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        st, Q = self.state, self.num_query
        B = stop - start
        if self._scratch.numel() < B * self.num_gallery:
            self._scratch = torch.empty(B * self.num_gallery)
        overlap = shared_mass(st, start, stop, self._scratch[: B * self.num_gallery].view(B, self.num_gallery))
        jaccard = overlap.div_(overlap.neg().add_(2.0)).neg_().add_(1.0)   # 1 - m / (2 - m)
        scale = st.lambda_value / st.row_max[start:stop, None]
        if self.query_gallery is not None:     # elementwise, so `out` may be these very rows
            out = torch.mul(torch.from_numpy(self.query_gallery[start:stop]), scale, out=out)
        else:
            x = st.x
            out = torch.addmm(st.sq[Q:].unsqueeze(0), x[start:stop], x[Q:].T, alpha=-2.0, out=out)
            out.add_(st.sq[start:stop, None]).mul_(scale)
        return out.clamp_(min=0).add_(jaccard, alpha=1 - st.lambda_value)


def k_reciprocal(qf: Any, gf: Any, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                 metric: str = "euclidean", knn_backend: str = "torch", chunk_size: int | None = None,
                 knn_options: dict[str, Any] | None = None) -> np.ndarray:
    """The Q x G k-reciprocal re-ranked distance matrix (float32), computed sparsely.

    Equals the published `re_ranking(q_g, q_q, g_g, k1, k2, lambda_value)` applied to Euclidean distances
    between the features (between L2-normalised features for metric="cosine"). For galleries whose Q x G
    matrix does not fit, evaluate through `KReciprocalDistances` (vreid.eval.evaluate(rerank="kreciprocal")).
    """
    num_query, num_gallery = len(qf), len(gf)
    out = np.empty((num_query, num_gallery), np.float32)      # the kNN pass writes the distances here first
    source = KReciprocalDistances(qf, gf, metric, k1, k2, lambda_value, knn_backend, knn_options, out)
    chunk = chunk_size or auto_chunk_size(num_gallery, 4, budget=1 << 25)
    for start, stop in iter_blocks(num_query, chunk):
        source.block(start, stop, out=torch.from_numpy(out[start:stop]))
    return out
