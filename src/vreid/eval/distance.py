"""Query x gallery distances computed one block of query rows at a time (float32, torch or numpy inputs).

`DISTANCES` names every distance a run can rank by (`eval.metric`): "euclidean" and "cosine" between plain
feature rows, and "weighted_parts" between rows that pack several part features with their weights (MUSP's
area-weighted part distance). Each is a `RowDistance`; `FeatureDistances` computes any of them in query blocks.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol

import numpy as np
import torch

from vreid.registry import Registry

#: Memory (bytes) one block of a distance matrix and its per-element index buffers may take.
DEFAULT_BLOCK_BYTES = 1 << 30


def as_tensor(x: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A tensor of `dtype` sharing memory with `x` where possible (numpy arrays, tensors, lists).

    A tensor keeps its device: features on a GPU are scored there.
    """
    if isinstance(x, torch.Tensor):
        return x.detach().to(dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def device_index(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """A numpy index (or value) array as a tensor on `like`'s device; shared memory, no copy, on the CPU."""
    t = torch.from_numpy(a)
    return t if like.device.type == "cpu" else t.to(like.device)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor's values as a numpy array (copied off an accelerator, shared on the CPU)."""
    return t.detach().cpu().numpy()


def as_int_array(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(np.int64, copy=False).reshape(-1)


class RowDistance(Protocol):
    """One way to score query rows against gallery rows (smaller = more similar).

    `prepare` turns raw embedding rows (N, D) into the rows the distance reads (still a plain 2-D tensor, so
    they can be sliced and indexed); `gallery_state` caches what every block needs from the prepared gallery;
    `block` gives the (B, G) distances of a block of prepared queries, `pairs` the distances of row pairs
    (a[i], b[i]). `vector` is True when the prepared rows are ranked by their squared Euclidean distance (or in
    its order), so that re-rankers may treat them as vectors (kNN, faiss, query expansion).
    """

    vector: bool

    def prepare(self, x: torch.Tensor) -> torch.Tensor: ...

    def gallery_state(self, g: torch.Tensor) -> Any: ...

    def block(self, q: torch.Tensor, g: torch.Tensor, state: Any, out: torch.Tensor | None = None
              ) -> torch.Tensor: ...

    def pairs(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor: ...


#: name -> RowDistance (the run's `eval.metric`)
DISTANCES: Registry[RowDistance] = Registry("distance")


def squared_euclidean_block(q: torch.Tensor, g: torch.Tensor, g_sqnorm: torch.Tensor | None = None,
                            out: torch.Tensor | None = None) -> torch.Tensor:
    """|q_i - g_j|^2 for a block of rows, by one addmm; `out` (len(q) x len(g)) is reused when given."""
    if g_sqnorm is None:
        g_sqnorm = g.pow(2).sum(1)
    q_sqnorm = q.pow(2).sum(1, keepdim=True)
    if out is None:
        out = torch.addmm(g_sqnorm.unsqueeze(0), q, g.T, beta=1.0, alpha=-2.0)
    else:
        torch.addmm(g_sqnorm.unsqueeze(0), q, g.T, beta=1.0, alpha=-2.0, out=out)
    return out.add_(q_sqnorm).clamp_(min=0.0)


class SquaredEuclidean:
    """Squared Euclidean distance (what the reference evaluators rank; the same order as Euclidean)."""

    vector = True

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def gallery_state(self, g: torch.Tensor) -> torch.Tensor:
        return g.pow(2).sum(1)

    def block(self, q, g, state=None, out=None) -> torch.Tensor:
        return squared_euclidean_block(q, g, state, out)

    def pairs(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).pow(2).sum(1)


DISTANCES.register("euclidean")(SquaredEuclidean())


class CosineDistance:
    """1 - cosine similarity; the prepared rows are L2-normalised (|a - b|^2 = 2 - 2 cos: the same order)."""

    vector = True

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x, dim=1)

    def gallery_state(self, g: torch.Tensor) -> None:
        return None

    def block(self, q, g, state=None, out=None) -> torch.Tensor:
        out = torch.mm(q, g.T, out=out) if out is not None else torch.mm(q, g.T)
        return out.neg_().add_(1.0)

    def pairs(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return 1.0 - (a * b).sum(1)


DISTANCES.register("cosine")(CosineDistance())


def check_metric(metric: str) -> None:
    if metric not in DISTANCES.names():
        raise ValueError(f"unknown metric '{metric}'; available: {', '.join(DISTANCES.names())}")


def row_distance(metric: str) -> RowDistance:
    """The registered distance named `metric` (ValueError listing the names for an unknown one)."""
    check_metric(metric)
    return DISTANCES.get(metric)


def prepare_features(qf: Any, gf: Any, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 query and gallery rows as distance `metric` reads them (L2-normalised for cosine)."""
    distance = row_distance(metric)
    q, g = as_tensor(qf), as_tensor(gf)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"features must be 2-D with the same width; got {tuple(q.shape)} and {tuple(g.shape)}")
    return distance.prepare(q).contiguous(), distance.prepare(g).contiguous()


def distance_block(q: torch.Tensor, g: torch.Tensor, metric: str, g_state: Any = None,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """Distances of a block of (prepared) queries to all gallery rows, by the distance `metric` names.

    `g_state` is that distance's `gallery_state(g)` (computed here when None); `out` (len(q) x len(g), float32)
    is reused when given.
    """
    distance = row_distance(metric)
    return distance.block(q, g, distance.gallery_state(g) if g_state is None else g_state, out)


class DistanceSource(Protocol):
    """Anything that yields query-row blocks of a Q x G distance matrix (smaller = more similar)."""

    num_query: int
    num_gallery: int

    def block(self, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor: ...


class FeatureDistances:
    """Distances computed on demand from features, one block of queries at a time, by a registered distance."""

    def __init__(self, qf: Any, gf: Any, metric: str = "euclidean") -> None:
        self.metric = metric
        self.distance = row_distance(metric)
        self.q, self.g = prepare_features(qf, gf, metric)
        self.num_query, self.num_gallery = self.q.shape[0], self.g.shape[0]
        self.g_state = self.distance.gallery_state(self.g)
        self.device = self.q.device

    def block(self, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        return self.distance.block(self.q[start:stop], self.g, self.g_state, out)


class MatrixDistances:
    """A precomputed Q x G matrix (numpy, tensor or memory-mapped array) read one block at a time."""

    def __init__(self, distmat: Any) -> None:
        self.distmat = distmat
        self.num_query, self.num_gallery = int(distmat.shape[0]), int(distmat.shape[1])
        self.device = distmat.device if isinstance(distmat, torch.Tensor) else torch.device("cpu")

    def block(self, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        block = as_tensor(self.distmat[start:stop])
        if out is not None:
            return out.copy_(block)
        return block.clone() if isinstance(self.distmat, torch.Tensor) else block


class FunctionDistances:
    """Wraps `fn(start, stop) -> (stop - start) x G distances` as a DistanceSource."""

    def __init__(self, fn: Callable[[int, int], Any], num_query: int, num_gallery: int) -> None:
        self.fn, self.num_query, self.num_gallery = fn, num_query, num_gallery

    def block(self, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        block = as_tensor(self.fn(start, stop))
        return out.copy_(block) if out is not None else block


def auto_chunk_size(num_gallery: int, bytes_per_element: int = 12, budget: int = DEFAULT_BLOCK_BYTES,
                    device: torch.device | str | None = None) -> int:
    """Query rows per block so that a block and its per-element buffers stay within `budget` bytes.

    On a CUDA device the budget is also capped at half of its free memory (the rest is left to the caller).
    """
    if device is not None and torch.device(device).type == "cuda":
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        budget = min(budget, free // 2)
    return int(max(1, min(4096, budget // max(1, num_gallery * bytes_per_element))))


def source_device(source: Any) -> torch.device:
    """Where a DistanceSource computes: its `device`, else its query features' device, else the CPU."""
    device = getattr(source, "device", None)
    if device is None:
        q = getattr(source, "q", None)
        device = q.device if isinstance(q, torch.Tensor) else "cpu"
    return torch.device(device)


def iter_blocks(num_rows: int, chunk_size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, num_rows, chunk_size):
        yield start, min(num_rows, start + chunk_size)


# registers "weighted_parts" (it imports DISTANCES from this module, so it comes last)
from vreid.eval import part_distance as _part_distance  # noqa: E402,F401
