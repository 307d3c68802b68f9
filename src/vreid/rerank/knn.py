"""k nearest neighbours of every row of a feature matrix among all rows (exact torch blocks, or faiss).

Every backend returns torch tensors on the input's device (faiss computes on the CPU and moves its answer
there); `knn` hands back numpy arrays for callers outside torch, `knn_tensors` the tensors.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from vreid.eval.distance import auto_chunk_size, distance_block, iter_blocks, prepare_features
from vreid.eval.ranking import topk_block
from vreid.progress import block_rows, track
from vreid.registry import Registry

#: name -> function(x, k, with_row_max, **options) -> (squared distances N x k, indices N x k, row max or None),
#: torch tensors on x's device
KNN_BACKENDS: Registry = Registry("knn backend")

#: on_block(row_start, row_stop, col_start, col_stop, squared distances) for each block the torch pass computes
BlockHook = Callable[[int, int, int, int, torch.Tensor], None]

#: Extra neighbours the faiss search takes so that a tie at the k-th place is seen whole (the idea of
#: eval.ranking.topk_block); rows whose tie runs past them are ranked from the full row
TIE_MARGIN = 8

KnnResult = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]


def feature_device(x: Any) -> torch.device:
    """The device a feature input lives on: a tensor's own, the CPU for anything else."""
    return x.device if isinstance(x, torch.Tensor) else torch.device("cpu")


def prepare_on_device(qf: Any, gf: Any, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """eval's prepare_features, kept on (or moved back to) the device the query features came on."""
    device = feature_device(qf)
    q, g = prepare_features(qf, gf, metric)
    return q.to(device), g.to(device)


def order_keys(dist: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """One int64 per entry that orders by (distance, index): non-negative float bits above, index below."""
    bits = (dist.clamp(min=0) + 0.0).view(torch.int32)   # + 0.0 turns -0.0 into 0.0
    return (bits.to(torch.int64) << 32) | idx


def keys_to_entries(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(distances, indices) back from `order_keys`."""
    return (keys >> 32).to(torch.int32).view(torch.float32), keys & 0xFFFFFFFF


def stable_topk(dist: torch.Tensor, k: int, margin: int = TIE_MARGIN) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of each row's k smallest entries in stable order (value, then index), on dist's device."""
    cols = dist.shape[1]
    k = min(k, cols)
    depth = min(cols, k + margin)      # topk keeps any member of a tie: look past the k-th place
    vals, idx = torch.topk(dist, depth, dim=1, largest=False, sorted=True)
    long = torch.nonzero(vals[:, -1] == vals[:, k - 1]).flatten() if depth < cols else vals.new_empty(0).long()
    by_index = torch.argsort(idx, dim=1)
    vals, idx = vals.gather(1, by_index), idx.gather(1, by_index)
    by_value = torch.sort(vals, dim=1, stable=True).indices[:, :k]
    vals, idx = vals.gather(1, by_value), idx.gather(1, by_value)
    if long.numel():                   # the tie runs past the margin: sort those rows whole
        full_vals, full_idx = torch.sort(dist[long], dim=1, stable=True)
        vals[long], idx[long] = full_vals[:, :k], full_idx[:, :k]
    return vals, idx


class _RunningKnn:
    """Each row's best k (distance, index) pairs so far, sorted; candidate lists (row, col, dist) merge in."""

    def __init__(self, n: int, k: int, device: torch.device) -> None:
        self.k = k
        self.dist = torch.full((n, k), float("inf"), device=device)
        self.idx = torch.full((n, k), n, dtype=torch.int64, device=device)

    @property
    def kth(self) -> torch.Tensor:
        """Each row's k-th distance so far: only entries at or below it can enter."""
        return self.dist[:, -1]

    def merge(self, row0: int, rows: torch.Tensor, cols: torch.Tensor, dist: torch.Tensor) -> None:
        """Merge candidates of rows row0 + `rows` (local) into their lists."""
        if rows.numel() == 0:
            return
        k = self.k
        present = torch.bincount(rows) > 0            # a count, not torch.unique's sort: rows are block-local
        touched = torch.nonzero(present).view(-1)
        local = (torch.cumsum(present, 0) - 1)[rows]
        u = len(touched)
        touched += row0
        keys = order_keys(torch.cat([dist, self.dist[touched].view(-1)]), torch.cat([cols, self.idx[touched].view(-1)]))
        groups = torch.cat([local, torch.arange(u, device=rows.device).repeat_interleave(k)])
        keys, order = torch.sort(keys)
        groups, regroup = torch.sort(groups[order], stable=True)      # by row, (distance, index) within
        first = torch.searchsorted(groups, torch.arange(u, device=rows.device))   # every row holds >= k entries
        best = keys[regroup[(first[:, None] + torch.arange(k, device=rows.device)).view(-1)]].view(u, k)
        self.dist[touched], self.idx[touched] = keys_to_entries(best)


def _flat_nonzero(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) of a 2-D mask's True entries, row-major; a 1-D nonzero is faster than a 2-D one."""
    flat = torch.nonzero(mask.view(-1)).view(-1)
    return flat // mask.shape[1], flat % mask.shape[1]


@KNN_BACKENDS.register("torch")
def knn_torch(x: torch.Tensor, k: int, with_row_max: bool = True, chunk_size: int | None = None,
              on_block: BlockHook | None = None, block_width: int = 8192) -> KnnResult:
    """Exact kNN (self included) from blocks of squared Euclidean distances; also each row's maximum.

    Runs on x's device. The distance matrix is symmetric, so only blocks on or above the diagonal are
    computed (N^2 d / 2 multiply-adds); each serves its rows and, through its columns, the rows below. The
    first strip of rows seeds every row's list with torch.topk (one deeper, to see a tie that crosses the
    k-th place); after that only entries at or below a row's current k-th distance are candidates (a
    compare and a nonzero, no sort), and there are few. Rows come out as a stable sort of the full row
    would order them, by (distance, index), ties at the k-th place included. `on_block(r0, r1, c0, c1, d)`
    sees every computed block (r0 <= c0), e.g. to keep the query x gallery part. Blocks are `chunk_size`
    (default 2048) rows by `block_width` columns.
    """
    n, dim, device = x.shape[0], x.shape[1], x.device
    k = min(k, n)
    sq = x.pow(2).sum(1)
    b = max(k, min(n, chunk_size or 2048, 1 << 16))
    w = max(b, block_width)
    best = _RunningKnn(n, k, device)
    row_max = torch.zeros(n, device=device)
    buf, below = torch.empty(b * w, device=device), torch.empty(b * w, dtype=torch.bool, device=device)
    # left[i] . right[j] = |x_i|^2 + |x_j|^2 - 2 x_i . x_j with left = [x, |x|^2, 1] (built a block at a time)
    # and right = [-2x, 1, |x|^2] (built once: N x (d + 2), about the size of x)
    left = torch.ones(b, dim + 2, device=device)
    right = torch.cat([x * -2.0, torch.ones(n, 1, device=device), sq[:, None]], 1)

    def offer_topk(d: torch.Tensor, row0: int, col0: int) -> None:
        """Offer each row of block `d` its entries at or below the block's k-th smallest: topk's k, or all of
        them where a tie crosses the k-th place (topk keeps any of its members; the merge orders them)."""
        kk = min(k, d.shape[1])
        depth = min(kk + 1, d.shape[1])   # one more than k: it ties with the k-th only if the tie crosses
        vals, idx = torch.topk(d, depth, dim=1, largest=False, sorted=True)
        kth = vals[:, kk - 1].clamp(min=0)   # the merge counts everything below 0 as 0
        crossing = (vals[:, -1] <= kth) & (depth > kk)
        clear, tied = torch.nonzero(~crossing).view(-1), torch.nonzero(crossing).view(-1)
        best.merge(row0, clear.repeat_interleave(kk), idx[clear, :kk].reshape(-1) + col0,
                   vals[clear, :kk].reshape(-1))
        if tied.numel():
            dt = d[tied]
            r, c = _flat_nonzero(dt <= kth[tied, None])
            best.merge(row0, tied[r], c + col0, dt[r, c])

    def offer_below(d: torch.Tensor, kth: torch.Tensor, row0: int, col0: int, transposed: bool) -> None:
        mask = torch.le(d, kth, out=below[: d.numel()].view(d.shape))
        r, c = _flat_nonzero(mask)
        if transposed:
            best.merge(row0, c, r + col0, d[r, c])
        else:
            best.merge(row0, r, c + col0, d[r, c])

    def raise_max(rows: slice, block_max: torch.Tensor) -> None:
        torch.maximum(row_max[rows], block_max, out=row_max[rows])

    for i0, i1 in track(iter_blocks(n, b), "kNN rows", n, units=block_rows):
        lb = left[: i1 - i0]
        lb[:, :dim], lb[:, dim] = x[i0:i1], sq[i0:i1]
        for j0 in range(i0, n, w):
            j1 = min(n, j0 + w)
            d = torch.mm(lb, right[j0:j1].T, out=buf[: (i1 - i0) * (j1 - j0)].view(i1 - i0, j1 - j0))
            if on_block is not None:
                on_block(i0, i1, j0, j1, d)
            if with_row_max:
                raise_max(slice(i0, i1), d.amax(1))
            if i0 == 0:
                offer_topk(d, i0, j0)
            else:
                offer_below(d, best.kth[i0:i1, None], i0, j0, transposed=False)
            c0 = max(i1, j0)                       # columns below the diagonal block, as rows
            if c0 >= j1:
                continue
            dc = d[:, c0 - j0:]
            if with_row_max:
                raise_max(slice(c0, j1), dc.amax(0))
            if i0 == 0:
                offer_topk(dc.T.contiguous(), c0, i0)   # a copy, then a row topk: faster than topk on the view
            else:
                offer_below(dc, best.kth[None, c0:j1], c0, i0, transposed=True)
    return best.dist, best.idx, row_max if with_row_max else None


def _sort_rows(dist: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order each row by (distance, index), as a stable argsort of the full row would."""
    keys = np.lexsort((idx.ravel(), dist.ravel(), np.repeat(np.arange(len(dist)), dist.shape[1])))
    order = (keys - np.repeat(np.arange(len(dist)) * dist.shape[1], dist.shape[1])).reshape(dist.shape)
    return np.take_along_axis(dist, order, 1), np.take_along_axis(idx, order, 1)


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
              nprobe: int = 32, seed: int = 0) -> KnnResult:
    """kNN with faiss on the CPU (its answer moved to x's device): "flat" (exact, in the torch backend's
    stable order) or "ivf" (IndexIVFFlat, approximate; for very large N)."""
    import faiss

    xs = np.ascontiguousarray(x.detach().cpu().numpy().astype(np.float32))
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
    row_max = torch.from_numpy(row_max_faiss(xs)).to(x.device) if with_row_max else None
    return (torch.from_numpy(np.ascontiguousarray(dist[:, :k])).to(x.device),
            torch.from_numpy(np.ascontiguousarray(idx[:, :k])).to(x.device), row_max)


def _rank_long_ties(x: torch.Tensor, dist: np.ndarray, idx: np.ndarray, k: int) -> None:
    """Rows whose tie at the k-th place runs past the searched depth (faiss keeps any of its members) get
    their first k entries from an exact stable sort of the full row."""
    rows = np.flatnonzero(dist[:, -1] == dist[:, k - 1])
    for start, stop in iter_blocks(len(rows), auto_chunk_size(len(x))):
        r = rows[start:stop]
        idx[r, :k], dist[r, :k] = topk_block(distance_block(x[r], x, "euclidean"), k)


def knn_by_distance(x: torch.Tensor, k: int, distance: Any, with_row_max: bool = True,
                    chunk_size: int | None = None, on_block: BlockHook | None = None) -> KnnResult:
    """Exact kNN (self included) of prepared rows `x` by a registered distance that is not a vector one
    (vreid.eval.distance.RowDistance, e.g. weighted_parts): full rows of distances one block of rows at a time,
    in a stable sort's order, with each row's maximum. `on_block(r0, r1, 0, N, d)` sees every block."""
    n = x.shape[0]
    k = min(k, n)
    state = distance.gallery_state(x)
    dists, idxs, maxima = [], [], []
    chunk = chunk_size or auto_chunk_size(n, 8, device=x.device)
    for i0, i1 in track(iter_blocks(n, chunk), "kNN rows", n, units=block_rows):
        d = distance.block(x[i0:i1], x, state)
        if on_block is not None:
            on_block(i0, i1, 0, n, d)
        if with_row_max:
            maxima.append(d.amax(1))
        vals, idx = stable_topk(d, k)
        dists.append(vals)
        idxs.append(idx)
    return torch.cat(dists), torch.cat(idxs), torch.cat(maxima) if with_row_max else None


def knn_tensors(x: torch.Tensor, k: int, backend: str = "torch", with_row_max: bool = True, **options
                ) -> KnnResult:
    """`knn`'s answer as torch tensors on x's device."""
    return KNN_BACKENDS.get(backend)(x, k, with_row_max=with_row_max, **options)


def knn(x: torch.Tensor, k: int, backend: str = "torch", with_row_max: bool = True, **options
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Squared distances and indices (N x k) of each row's k nearest rows, itself included, in a stable sort's
    order (distance, then index; exact backends keep exactly its first k); and each row's maximum."""
    return tuple(None if t is None else t.cpu().numpy() for t in knn_tensors(x, k, backend, with_row_max, **options))
