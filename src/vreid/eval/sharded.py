"""Metrics of a gallery split into contiguous shards (one per process), equal to the one-process ones.

A positive's rank is the number of valid gallery items ordered before it (distance, then gallery index), a sum
over shards: each shard counts its own items against every positive, wherever the positive lies, so no
process holds the whole gallery. The top-k lists are each shard's top-k merged by (distance, gallery index).
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np
import torch

from vreid.eval.distance import FeatureDistances, as_int_array, auto_chunk_size, iter_blocks
from vreid.eval.metrics import (
    EvalResult, GalleryIndex, _per_query, count_before, label_arrays, positives_after_junk, same_id_pairs,
    summarise_queries,
)
from vreid.eval.ranking import topk_block
from vreid.progress import block_rows, track


class Collectives(Protocol):
    """How the processes that hold the other shards are joined (vreid.engine.sharded_eval under torchrun)."""

    def gather(self, array: np.ndarray) -> np.ndarray:
        """Every process's array (lengths may differ) concatenated along axis 0, in rank order, on every rank."""
        ...

    def sum(self, array: np.ndarray) -> np.ndarray:
        """The elementwise sum over processes, on every rank."""
        ...


class OneProcess:
    """The collectives of a lone process: its shards are all the shards."""

    def gather(self, array: np.ndarray) -> np.ndarray:
        return array

    def sum(self, array: np.ndarray) -> np.ndarray:
        return array


#: Gallery shards start at multiples of this: BLAS computes a product in column tiles, and a shard whose start
#: is off the one-process product's tile grid gets a few edge entries rounded otherwise (MKL does).
GALLERY_ALIGN = 64


def shard_bounds(num_items: int, num_shards: int, shard: int, align: int = 1) -> tuple[int, int]:
    """(start, stop) of contiguous shard `shard`: np.array_split's cuts, moved down to multiples of `align`."""
    def cut(i: int) -> int:
        if i >= num_shards:
            return num_items
        size, extra = divmod(num_items, num_shards)
        return (i * size + min(i, extra)) // align * align

    return cut(shard), cut(shard + 1)


class GalleryShard:
    """Gallery items offset .. offset + len(ids) with their features, against the features of every query."""

    def __init__(self, qf: Any, gf: Any, g_ids: Any, g_cams: Any, offset: int, metric: str = "euclidean") -> None:
        # FeatureDistances on the shard: the very product and formula of the one-process blocks, per column
        self.distances = FeatureDistances(qf, gf, metric)
        self.ids, self.cams = as_int_array(g_ids), as_int_array(g_cams)
        self.cams_t = torch.from_numpy(self.cams)
        self.offset, self.num_gallery = offset, self.distances.num_gallery
        self.index = GalleryIndex(self.ids)

    def positives(self, dist: torch.Tensor, block_q_ids: np.ndarray, block_q_cams: np.ndarray,
                  junk_rule: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sets the shard's junk in `dist` to +inf; returns its positives (block row, global index, distance)."""
        rows, cols, same_cam = same_id_pairs(self.index, self.cams, block_q_ids, block_q_cams)
        _, prow, pcol, pos_dist = positives_after_junk(dist, junk_rule, rows, cols, same_cam, block_q_cams,
                                                       self.cams_t)
        return prow, pcol + self.offset, pos_dist

    def count_before(self, dist: torch.Tensor, rows: np.ndarray, cols: np.ndarray,
                     pos_dist: np.ndarray) -> np.ndarray:
        """Per positive (global index `cols`, rows ascending), the shard's valid items ordered before it."""
        local = cols - self.offset
        own = (local >= 0) & (local < self.num_gallery)
        return count_before(dist, rows, np.clip(local, 0, self.num_gallery), pos_dist, own)

    def topk(self, dist: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The shard's k nearest per query row (global indices), in (distance, index) order."""
        idx, d = topk_block(dist, min(k, self.num_gallery))
        return idx + self.offset, d


def merge_topk(indices: np.ndarray, distances: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k first of each row's candidates in (distance, global index) order: the shards' top-k merged."""
    order = np.lexsort((indices, distances), axis=1)[:, :k]
    return np.take_along_axis(indices, order, 1), np.take_along_axis(distances, order, 1)


def evaluate_shards(shards: Sequence[GalleryShard], q_ids: Any, q_cams: Any, num_gallery: int,
                    junk_rule: str = "same_id_same_camera", max_rank: int = 50, chunk_size: int | None = None,
                    top_k: int = 0, metric: str = "euclidean", protocol: str = "custom",
                    collectives: Collectives = OneProcess()) -> EvalResult:
    """`vreid.eval.evaluate` (no re-ranking, CGM or ROC) of every query against a gallery of `num_gallery` items.

    `shards`: this process's shards; `collectives` joins the other processes' (every one makes the same calls).
    """
    q_ids, _, q_cams, _ = label_arrays(shards[0].distances, q_ids, shards[0].ids, q_cams, shards[0].cams,
                                       junk_rule)
    Q, G = len(q_ids), num_gallery
    device = shards[0].distances.device
    chunk_size = chunk_size or auto_chunk_size(G, device=device)  # the one-process blocks: the same rows per product
    top_k = min(top_k, G)
    ap, inp, first = np.full(Q, np.nan), np.full(Q, np.nan), np.full(Q, -1, np.int64)
    buffers = [torch.empty(min(chunk_size, Q), s.num_gallery, device=s.distances.device) for s in shards]
    nearest = [(np.zeros((Q, min(top_k, s.num_gallery)), np.int64),
                np.zeros((Q, min(top_k, s.num_gallery)), np.float32)) for s in shards]
    for start, stop in track(iter_blocks(Q, chunk_size), "evaluating queries", Q, units=block_rows):
        B = stop - start
        dists = [s.distances.block(start, stop, out=buf[:B]) for s, buf in zip(shards, buffers)]
        for s, dist, (idx, d) in zip(shards, dists, nearest):
            if top_k and s.num_gallery:  # before junk removal, as the one-process ranked lists
                idx[start:stop], d[start:stop] = s.topk(dist, top_k)
        found = [s.positives(dist, q_ids[start:stop], q_cams[start:stop], junk_rule)
                 for s, dist in zip(shards, dists)]
        rows, cols, pos_dist = (collectives.gather(np.concatenate(part)) for part in zip(*found))
        order = np.lexsort((cols, pos_dist, rows))  # as `_rank_block` orders them; ranks ascend within a row
        rows, cols, pos_dist = rows[order], cols[order], pos_dist[order]
        counts = np.sum([s.count_before(dist, rows, cols, pos_dist) for s, dist in zip(shards, dists)], axis=0,
                        dtype=np.int64)
        ap[start:stop], inp[start:stop], first[start:stop] = _per_query(rows, collectives.sum(counts), B)
    ranked: dict[str, np.ndarray | None] = {"ranked_indices": None, "ranked_distances": None}
    if top_k:
        # gathered as (candidate, query): the processes' candidate counts may differ, the queries do not
        idx, d = (collectives.gather(np.concatenate([part[i] for part in nearest], 1).T).T for i in (0, 1))
        idx, d = merge_topk(np.ascontiguousarray(idx), np.ascontiguousarray(d), top_k)
        if metric == "euclidean":
            np.sqrt(d, out=d)  # as `evaluate` returns them: Euclidean, not squared
        ranked = {"ranked_indices": idx, "ranked_distances": d}
    return summarise_queries(ap, inp, first, G, max_rank, junk_rule=junk_rule, metric=metric, rerank="none",
                             protocol=protocol, **ranked)
