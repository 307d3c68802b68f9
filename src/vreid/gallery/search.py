"""What `vreid index` and `vreid search` share above the stores: times given as text, image lists, gallery items
from dataset records or loose files, embedding in batches (and in shards), and re-ranking the top candidates."""
from __future__ import annotations

import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from vreid.errors import VreidError
from vreid.gallery.base import Embedder, GalleryItem, GalleryStore, Hit

#: Files `vreid index add` and `--images` take as images (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: Candidates re-ranked per query: at least this many (or 3 x --top), so that the neighbourhoods mean something.
RERANK_CANDIDATES = 100


class SearchError(VreidError):
    """A bad option or input of `vreid index` / `vreid search`; the message names it and the fix."""


def parse_time(text: str, option: str = "--time") -> float:
    """Seconds since the epoch from epoch seconds ("1700000000.5") or ISO 8601 ("2024-05-01T12:00:00Z";
    without a zone it is UTC)."""
    try:
        value = float(text)
        if math.isfinite(value):
            return value
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise SearchError(f"{option} {text!r}: not a time; give ISO 8601 (2024-05-01T12:00:00Z, UTC when no zone "
                          "is given) or seconds since the epoch (1714564800)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def format_time(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, timezone.utc).isoformat().replace("+00:00", "Z")


def list_images(paths: Iterable[str | os.PathLike], option: str = "IMAGE_OR_DIR") -> list[Path]:
    """The image files named, and those under the folders named (sorted), in argument order.

    A missing path or a folder with no image is an error that names it."""
    found: list[Path] = []
    for given in paths:
        p = Path(given)
        if p.is_dir():
            inside = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise SearchError(f"{p}: no images in this folder (looked for {', '.join(IMAGE_SUFFIXES)}, "
                                  "also in subfolders); point at the folder that holds them")
            found += inside
        elif p.is_file():
            found.append(p)
        else:
            raise SearchError(f"{option} {p}: no such file or folder; check the path")
    return found


def file_items(paths: Sequence[Path], camera: int | None = None, time: float | None = None) -> list[GalleryItem]:
    """Items for loose image files: the camera given (else unknown), the time given, else the file's mtime."""
    return [GalleryItem(str(p.resolve()), camera, time if time is not None else p.stat().st_mtime, None)
            for p in paths]


def record_items(records: Sequence[Any]) -> list[GalleryItem]:
    """Items for dataset records (vreid.data.ImageRecord): path, camera, vehicle id, and the time where the
    layout records one (else unknown: a dataset's file times say when it was copied, not when it was shot)."""
    return [GalleryItem(str(r.path), int(r.camera_id), None if r.timestamp is None else float(r.timestamp),
                        int(r.vehicle_id)) for r in records]


def open_images(paths: Sequence[str]) -> list[Any]:
    from vreid.data.images import open_rgb

    return [open_rgb(p) for p in paths]


def embed_items(embedder: Embedder, items: Sequence[GalleryItem], batch_size: int = 64) -> np.ndarray:
    """(len(items), dim) float32 embeddings of the items' images, read `batch_size` at a time."""
    parts = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        cams = [-1 if it.camera is None else int(it.camera) for it in chunk]
        parts.append(np.asarray(embedder.embed(open_images([it.path for it in chunk]), cameras=cams),
                                dtype=np.float32))
    return np.concatenate(parts) if parts else np.zeros((0, embedder.dim), np.float32)


def shard_slice(count: int, world_size: int, rank: int) -> slice:
    """This rank's contiguous share of `count` items (rank order; the shares concatenate to the whole)."""
    from vreid.eval.sharded import shard_bounds

    start, stop = shard_bounds(count, world_size, rank)
    return slice(start, stop)


def merge_shards(parts: Sequence[np.ndarray], dim: int) -> np.ndarray:
    """The ranks' embeddings, in rank order, as one array (a rank with nothing to embed sends (0, dim))."""
    filled = [np.asarray(p, dtype=np.float32).reshape(-1, dim) for p in parts]
    return np.concatenate(filled) if filled else np.zeros((0, dim), np.float32)


def search_store(store: GalleryStore, queries: np.ndarray, top_k: int = 10, rerank: str = "none",
                 cameras: Sequence[int] | None = None, after: float | None = None,
                 before: float | None = None) -> list[list[Hit]]:
    """The store's top-k per query under the filters; with `rerank` (a vreid.rerank name), the top
    max(RERANK_CANDIDATES, 3k) candidates are re-ranked by it and their re-ranked distances returned."""
    if rerank in (None, "", "none"):
        return store.search(queries, top_k, cameras=cameras, after=after, before=before)
    from vreid.rerank.registry import build_reranker

    pool = max(RERANK_CANDIDATES, 3 * top_k)
    out = []
    for q, hits in zip(np.atleast_2d(queries), store.search(queries, pool, cameras=cameras, after=after,
                                                           before=before)):
        if len(hits) < 2:
            out.append(hits[:top_k])
            continue
        gallery = store.vectors([h.id for h in hits])
        query = q[None].astype(np.float32)
        source = build_reranker(rerank, query, gallery, store.info.metric, **_fit_options(rerank, len(hits)))
        distances = np.asarray(source.block(0, 1).cpu()).reshape(-1)
        order = np.lexsort((np.arange(len(hits)), distances))[:top_k]
        out.append([Hit(hits[i].id, float(distances[i]), hits[i].item) for i in order])
    return out


#: Re-ranker -> its neighbourhood-size options and their defaults (capped by the candidate count).
NEIGHBOURHOOD_OPTIONS = {"kreciprocal": {"k1": 20, "k2": 6}, "sparse": {"k": 30}, "aqe": {"k": 5},
                         "alpha_qe": {"k": 5}, "fastreid_aqe": {"qe_k": 10}}


def _fit_options(rerank: str, candidates: int) -> dict[str, int]:
    """Neighbourhood sizes no larger than the candidate set (the defaults assume a whole gallery)."""
    return {key: min(value, candidates) for key, value in NEIGHBOURHOOD_OPTIONS.get(rerank, {}).items()}


def hits_json(hits: Sequence[Hit]) -> list[dict[str, Any]]:
    return [{"rank": rank, "id": h.id, "distance": h.distance, "path": h.item.path, "camera": h.item.camera,
             "time": h.item.time, "vehicle_id": h.item.vehicle_id} for rank, h in enumerate(hits, 1)]
