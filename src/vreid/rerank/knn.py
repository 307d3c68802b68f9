"""k nearest neighbours of every row of a feature matrix among all rows (exact torch blocks, or faiss)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from vreid.eval.distance import auto_chunk_size, distance_block, iter_blocks
from vreid.eval.ranking import topk_block
from vreid.progress import block_rows, track
from vreid.registry import Registry

#: name -> function(x, k, with_row_max, **options) -> (squared distances N x k, indices N x k, row max or None)
KNN_BACKENDS: Registry = Registry("knn backend")

#: on_block(row_start, row_stop, col_start, col_stop, squared distances) for each block the torch pass computes
BlockHook = Callable[[int, int, int, int, torch.Tensor], None]

#: Extra neighbours the faiss search takes so that a tie at the k-th place is seen whole (the idea of
#: eval.ranking.topk_block); rows whose tie runs past them are ranked from the full row
TIE_MARGIN = 8


def _sort_rows(dist: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order each row by (distance, index), as a stable argsort of the full row would."""
    keys = np.lexsort((idx.ravel(), dist.ravel(), np.repeat(np.arange(len(dist)), dist.shape[1])))
    order = (keys - np.repeat(np.arange(len(dist)) * dist.shape[1], dist.shape[1])).reshape(dist.shape)
    return np.take_along_axis(dist, order, 1), np.take_along_axis(idx, order, 1)


class _RunningKnn:
    """Each row's best k (distance, index) pairs so far, sorted; candidate lists (row, col, dist) merge in."""

    def __init__(self, n: int, k: int) -> None:
        self.k = k
        self.dist = np.full((n, k), np.inf, np.float32)
        self.idx = np.full((n, k), n, np.int64)

    @property
    def kth(self) -> np.ndarray:
        """Each row's k-th distance so far: only entries at or below it can enter."""
        return self.dist[:, -1]

    def merge(self, row0: int, rows: np.ndarray, cols: np.ndarray, dist: np.ndarray) -> None:
        """Merge candidates of rows row0 + `rows` (local, < 65,536) into their lists."""
        if len(rows) == 0:
            return
        k = self.k
        present = np.bincount(rows)
        touched = np.flatnonzero(present)
        local = (np.cumsum(present > 0) - 1)[rows]
        u = len(touched)
        touched += row0
        # one int64 key orders a row's entries by (distance, index): non-negative float bits above, index below
        bits = np.concatenate([np.maximum(dist, 0) + np.float32(0), self.dist[touched].ravel()]).view(np.int32)
        keys = (bits.astype(np.int64) << 32) | np.concatenate([cols, self.idx[touched].ravel()])
        groups = np.concatenate([local, np.repeat(np.arange(u), k)]).astype(np.uint16)
        order = np.argsort(keys)
        order = order[np.argsort(groups[order], kind="stable")]    # radix sort on 16-bit groups
        first = np.searchsorted(groups[order], np.arange(u))        # every row holds >= k entries
        best = keys[order[(first[:, None] + np.arange(k)).ravel()]].reshape(u, k)
        self.dist[touched] = (best >> 32).astype(np.int32).view(np.float32)
        self.idx[touched] = best & 0xFFFFFFFF


@KNN_BACKENDS.register("torch")
def knn_torch(x: torch.Tensor, k: int, with_row_max: bool = True, chunk_size: int | None = None,
              on_block: BlockHook | None = None, block_width: int = 8192
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Exact kNN (self included) from blocks of squared Euclidean distances; also each row's maximum.

    The distance matrix is symmetric, so only blocks on or above the diagonal are computed (N^2 d / 2
    multiply-adds); each serves its rows and, through its columns, the rows below. The first strip of rows
    seeds every row's list with torch.topk (one deeper, to see a tie that crosses the k-th place);
    after that only entries at or below a row's current k-th distance are candidates (a compare and a
    flatnonzero, no sort), and there are few. Rows come out as a stable sort of the full row would order
    them, by (distance, index), ties at the k-th place included. `on_block(r0, r1, c0, c1, d)` sees every
    computed block (r0 <= c0), e.g. to keep the query x gallery part. Blocks are `chunk_size` (default
    2048) rows by `block_width` columns.
    """
    n = x.shape[0]
    k = min(k, n)
    sq, dim = x.pow(2).sum(1), x.shape[1]
    b = max(k, min(n, chunk_size or 2048, 1 << 16))
    w = max(b, block_width)
    best = _RunningKnn(n, k)
    row_max = np.zeros(n, np.float32)
    buf, below = torch.empty(b * w), np.empty(b * w, bool)
    # left[i] . right[j] = |x_i|^2 + |x_j|^2 - 2 x_i . x_j with left = [x, |x|^2, 1] (built a block at a time)
    # and right = [-2x, 1, |x|^2] (built once: N x (d + 2), about the size of x)
    left = torch.ones(b, dim + 2)
    right = torch.cat([x * -2.0, torch.ones(n, 1), sq[:, None]], 1)

    def offer_topk(d: torch.Tensor, row0: int, col0: int) -> None:
        """Offer each row of block `d` its entries at or below the block's k-th smallest: topk's k, or all of
        them where a tie crosses the k-th place (topk keeps any of its members; the merge orders them)."""
        kk = min(k, d.shape[1])
        depth = min(kk + 1, d.shape[1])   # one more than k: it ties with the k-th only if the tie crosses
        vals, idx = (t.numpy() for t in torch.topk(d, depth, dim=1, largest=False, sorted=True))
        kth = np.maximum(vals[:, kk - 1], 0)   # the merge counts everything below 0 as 0
        crossing = (vals[:, -1] <= kth) & (depth > kk)
        clear, tied = np.flatnonzero(~crossing), np.flatnonzero(crossing)
        best.merge(row0, np.repeat(clear, kk), idx[clear, :kk].ravel() + col0, vals[clear, :kk].ravel())
        if len(tied):
            dn = d.numpy()[tied]
            r, c = np.nonzero(dn <= kth[tied, None])
            best.merge(row0, tied[r], c + col0, dn[r, c])

    def offer_below(dn: np.ndarray, kth: np.ndarray, row0: int, col0: int, transposed: bool) -> None:
        mask = np.less_equal(dn, kth, out=below[: dn.size].reshape(dn.shape))
        r, c = np.divmod(np.flatnonzero(mask), dn.shape[1])   # several times faster than a 2-D nonzero
        if transposed:
            best.merge(row0, c, r + col0, dn[r, c])
        else:
            best.merge(row0, r, c + col0, dn[r, c])

    for i0, i1 in track(iter_blocks(n, b), "kNN rows", n, units=block_rows):
        lb = left[: i1 - i0]
        lb[:, :dim], lb[:, dim] = x[i0:i1], sq[i0:i1]
        for j0 in range(i0, n, w):
            j1 = min(n, j0 + w)
            d = torch.mm(lb, right[j0:j1].T, out=buf[: (i1 - i0) * (j1 - j0)].view(i1 - i0, j1 - j0))
            if on_block is not None:
                on_block(i0, i1, j0, j1, d)
            dn = d.numpy()
            if with_row_max:
                np.maximum(row_max[i0:i1], dn.max(1), out=row_max[i0:i1])
            if i0 == 0:
                offer_topk(d, i0, j0)
            else:
                offer_below(dn, best.kth[i0:i1, None], i0, j0, transposed=False)
            c0 = max(i1, j0)                       # columns below the diagonal block, as rows
            if c0 >= j1:
                continue
            dc = d[:, c0 - j0:]
            if with_row_max:
                np.maximum(row_max[c0:j1], dc.numpy().max(0), out=row_max[c0:j1])
            if i0 == 0:
                offer_topk(dc.T.contiguous(), c0, i0)   # a copy, then a row topk: faster than topk on the view
            else:
                offer_below(dc.numpy(), best.kth[None, c0:j1], c0, i0, transposed=True)
    return best.dist, best.idx, row_max if with_row_max else None


def row_max_faiss(x: np.ndarray) -> np.ndarray:
    """max_j |x_i - x_j|^2 for every i: a max-inner-product search of [-2 x_i, 1] against [x_j, |x_j|^2]."""
    import faiss

    sq = (x.astype(np.float32) ** 2).sum(1, keepdims=True)
    db = np.ascontiguousarray(np.hstack([x, sq]).astype(np.float32))
    queries = np.ascontiguousarray(np.hstack([-2 * x, np.ones_like(sq)]).astype(np.float32))
    index = faiss.IndexFlatIP(db.shape[1])
    index.add(db)
    best, _ = index.search(queries, 1)
    return np.maximum(best[:, 0] + sq[:, 0], 0).astype(np.float32)


@KNN_BACKENDS.register("faiss")
def knn_faiss(x: torch.Tensor, k: int, with_row_max: bool = True, index: str = "flat", nlist: int = 1024,
              nprobe: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """kNN with faiss: "flat" (exact, in the torch backend's stable order) or "ivf" (IndexIVFFlat,
    approximate; for very large N)."""
    import faiss

    xs = np.ascontiguousarray(x.numpy().astype(np.float32))
    n, d = xs.shape
    k = min(k, n)
    if index == "flat":
        ix = faiss.IndexFlatL2(d)
    elif index == "ivf":
        nlist = max(1, min(nlist, n // 39))
        ix = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
        train = xs[np.random.default_rng(seed).permutation(n)[: nlist * 256]]
        ix.train(train)
        ix.nprobe = nprobe
    else:
        raise ValueError(f"unknown faiss index '{index}'; available: flat, ivf")
    ix.add(xs)
    depth = min(n, k + TIE_MARGIN) if index == "flat" else k
    dist, idx = ix.search(xs, depth)
    dist, idx = _sort_rows(np.maximum(dist, 0), idx.astype(np.int64))
    if k < depth < n:   # at depth n every row is whole already
        _rank_long_ties(torch.from_numpy(xs), dist, idx, k)
    dist, idx = np.ascontiguousarray(dist[:, :k]), np.ascontiguousarray(idx[:, :k])
    return dist, idx, row_max_faiss(xs) if with_row_max else None


def _rank_long_ties(x: torch.Tensor, dist: np.ndarray, idx: np.ndarray, k: int) -> None:
    """Rows whose tie at the k-th place runs past the searched depth (faiss keeps any of its members) get
    their first k entries from an exact stable sort of the full row."""
    rows = np.flatnonzero(dist[:, -1] == dist[:, k - 1])
    for start, stop in iter_blocks(len(rows), auto_chunk_size(len(x))):
        r = rows[start:stop]
        idx[r, :k], dist[r, :k] = topk_block(distance_block(x[r], x, "euclidean"), k)


def knn(x: torch.Tensor, k: int, backend: str = "torch", with_row_max: bool = True, **options
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Squared distances and indices (N x k) of each row's k nearest rows, itself included, in a stable sort's
    order (distance, then index; exact backends keep exactly its first k); and each row's maximum."""
    return KNN_BACKENDS.get(backend)(x, k, with_row_max=with_row_max, **options)
