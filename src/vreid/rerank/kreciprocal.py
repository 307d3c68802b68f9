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
from vreid.rerank.knn import knn


def _reciprocal(neighbours: np.ndarray, width: int, block: int = 8192) -> np.ndarray:
    """mask[i, m]: i is among the first `width` neighbours of its own m-th neighbour."""
    n = len(neighbours)
    fwd = neighbours[:, :width]
    mask = np.empty(fwd.shape, bool)
    for s in range(0, n, block):
        f = fwd[s:s + block]
        mask[s:s + block] = (fwd[f] == np.arange(s, s + len(f))[:, None, None]).any(-1)
    return mask


def _pair_sqdist(x: torch.Tensor, sq: torch.Tensor, rows: np.ndarray, cols: np.ndarray,
                 block: int = 1 << 13) -> np.ndarray:
    out = np.empty(len(rows), np.float32)
    for s in range(0, len(rows), block):
        r, c = torch.from_numpy(rows[s:s + block]), torch.from_numpy(cols[s:s + block])
        dot = (x[r] * x[c]).sum(1)
        out[s:s + block] = (sq[r] + sq[c] - 2 * dot).clamp_(min=0).numpy()
    return out


def expansion_sets(neighbours: np.ndarray, k1: int, block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) pairs of each item's k-reciprocal set R(i, k1) grown by the R(c, k1/2) of its members c
    that share more than 2/3 of their items with R(i, k1); unique and sorted by (row, column)."""
    n = len(neighbours)
    half = int(np.around(k1 / 2.0)) + 1
    fwd, hfwd = neighbours[:, :k1 + 1], neighbours[:, :half]
    recip, hrecip = _reciprocal(neighbours, k1 + 1), _reciprocal(neighbours, half)
    recip_keys = (np.arange(n)[:, None] * n + fwd)[recip]       # sorted: rows ascending, then by column
    recip_keys.sort()
    keys = [recip_keys]
    for s in range(0, n, block):
        f, r = fwd[s:s + block], recip[s:s + block]
        cand_sets, cand_mask = hfwd[f], hrecip[f]                       # b x (k1+1) x half
        probe = np.arange(s, s + len(f))[:, None, None] * n + cand_sets  # is cand_sets[b, m, t] in R(b)?
        at = np.minimum(np.searchsorted(recip_keys, probe), len(recip_keys) - 1)
        member = recip_keys[at] == probe
        size = cand_mask.sum(-1)
        shared = (member & cand_mask).sum(-1)
        accept = r & (3 * shared > 2 * size)                              # |H ∩ R| > 2/3 |H|
        keys.append(probe[accept[..., None] & cand_mask])
    flat = np.unique(np.concatenate(keys))
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


def encode(x: torch.Tensor, num_query: int, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
           knn_backend: str = "torch", knn_options: dict[str, Any] | None = None) -> KReciprocalState:
    """Sparse V (after local query expansion) for all N = Q + G rows of `x` (queries first)."""
    n = x.shape[0]
    k = max(k1 + 1, k2)
    _, neighbours, row_max = knn(x, k, knn_backend, with_row_max=True, **(knn_options or {}))
    sq = x.pow(2).sum(1)
    rows, cols = expansion_sets(neighbours, k1)
    d = _pair_sqdist(x, sq, rows, cols) / row_max[rows]
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
    step = max(1, int(4e6 // max(1, counts.mean() if len(counts) else 1)))  # ~4M triplets at a time
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
    """Re-ranked Q x G distances produced one block of queries at a time (a DistanceSource)."""

    def __init__(self, qf: Any, gf: Any, metric: str = "euclidean", k1: int = 20, k2: int = 6,
                 lambda_value: float = 0.3, knn_backend: str = "torch",
                 knn_options: dict[str, Any] | None = None) -> None:
        q, g = prepare_features(qf, gf, metric)
        self.num_query, self.num_gallery = q.shape[0], g.shape[0]
        self.state = encode(torch.cat([q, g]), q.shape[0], k1, k2, lambda_value, knn_backend, knn_options)

    def block(self, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        st, Q = self.state, self.num_query
        B = stop - start
        out = out if out is not None else torch.empty(B, self.num_gallery)
        overlap = shared_mass(st, start, stop, out)
        jaccard = overlap.div_(overlap.neg().add_(2.0)).neg_().add_(1.0)   # 1 - m / (2 - m)
        x = st.x
        orig = torch.addmm(st.sq[Q:].unsqueeze(0), x[start:stop], x[Q:].T, alpha=-2.0)
        orig.add_(st.sq[start:stop, None]).clamp_(min=0).div_(st.row_max[start:stop, None])
        return jaccard.mul_(1 - st.lambda_value).add_(orig, alpha=st.lambda_value)


def k_reciprocal(qf: Any, gf: Any, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                 metric: str = "euclidean", knn_backend: str = "torch", chunk_size: int | None = None,
                 knn_options: dict[str, Any] | None = None) -> np.ndarray:
    """The Q x G k-reciprocal re-ranked distance matrix (float32), computed sparsely.

    Equals the published `re_ranking(q_g, q_q, g_g, k1, k2, lambda_value)` applied to Euclidean distances
    between the features (between L2-normalised features for metric="cosine"). For galleries whose Q x G
    matrix does not fit, evaluate through `KReciprocalDistances` (vreid.eval.evaluate(rerank="kreciprocal")).
    """
    source = KReciprocalDistances(qf, gf, metric, k1, k2, lambda_value, knn_backend, knn_options)
    out = np.empty((source.num_query, source.num_gallery), np.float32)
    for start, stop in iter_blocks(source.num_query, chunk_size or auto_chunk_size(source.num_gallery, 8)):
        source.block(start, stop, out=torch.from_numpy(out[start:stop]))
    return out
