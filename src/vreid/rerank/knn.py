"""k nearest neighbours of every row of a feature matrix among all rows (exact torch blocks, or faiss)."""
from __future__ import annotations

import numpy as np
import torch

from vreid.eval.distance import auto_chunk_size, iter_blocks
from vreid.registry import Registry

#: name -> function(x, k, with_row_max, **options) -> (squared distances N x k, indices N x k, row max or None)
KNN_BACKENDS: Registry = Registry("knn backend")


def _sort_rows(dist: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order each row by (distance, index), as a stable argsort of the full row would."""
    keys = np.lexsort((idx.ravel(), dist.ravel(), np.repeat(np.arange(len(dist)), dist.shape[1])))
    order = (keys - np.repeat(np.arange(len(dist)) * dist.shape[1], dist.shape[1])).reshape(dist.shape)
    return np.take_along_axis(dist, order, 1), np.take_along_axis(idx, order, 1)


@KNN_BACKENDS.register("torch")
def knn_torch(x: torch.Tensor, k: int, with_row_max: bool = True, chunk_size: int | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Exact kNN (self included) by blocks of squared Euclidean distances and torch.topk; also each row's max."""
    n = x.shape[0]
    k = min(k, n)
    sq = x.pow(2).sum(1)
    chunk_size = chunk_size or auto_chunk_size(n, bytes_per_element=8, budget=1 << 28)
    dist_out, idx_out = np.empty((n, k), np.float32), np.empty((n, k), np.int64)
    row_max = np.empty(n, np.float32) if with_row_max else None
    buf = torch.empty(min(chunk_size, n), n)
    for start, stop in iter_blocks(n, chunk_size):
        d = torch.addmm(sq.unsqueeze(0), x[start:stop], x.T, alpha=-2.0, out=buf[: stop - start])
        d.add_(sq[start:stop, None]).clamp_(min=0.0)
        vals, idx = torch.topk(d, k, dim=1, largest=False, sorted=True)
        dist_out[start:stop], idx_out[start:stop] = vals.numpy(), idx.numpy()
        if row_max is not None:
            row_max[start:stop] = d.amax(1).numpy()
    dist_out, idx_out = _sort_rows(dist_out, idx_out)
    return dist_out, idx_out, row_max


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
    """kNN with faiss: "flat" (exact) or "ivf" (IndexIVFFlat, approximate; for very large N)."""
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
    dist, idx = ix.search(xs, k)
    dist = np.maximum(dist, 0)
    dist, idx = _sort_rows(dist, idx.astype(np.int64))
    return dist, idx, row_max_faiss(xs) if with_row_max else None


def knn(x: torch.Tensor, k: int, backend: str = "torch", with_row_max: bool = True, **options
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    return KNN_BACKENDS.get(backend)(x, k, with_row_max=with_row_max, **options)
