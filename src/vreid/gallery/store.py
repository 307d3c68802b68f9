"""Opening a gallery store by URI: a folder (faiss + SQLite, the default) or `milvus://` / `http://` (Milvus).

`open_store(uri)` opens one that exists, `create_store(uri, info)` makes a new one; the engine is the entry of
`STORES` registered under the URI's scheme (a plain path is "file").
"""
from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any, Sequence

import numpy as np

from vreid.errors import VreidError
from vreid.gallery.base import STORES, GalleryItem, GalleryStore, StoreInfo

def store_metrics() -> list[str]:
    """The distances a store can rank by (the run's `eval.metric`): every registered one. A distance that is not a
    vector one (weighted_parts) is searched exactly, the stored rows scored in blocks (engines that cannot refuse
    it when the store is created)."""
    from vreid.eval.distance import DISTANCES

    return DISTANCES.names()


def is_vector_metric(metric: str) -> bool:
    """Whether an index of Euclidean / inner-product vectors ranks as `metric` does (euclidean, cosine)."""
    from vreid.eval.distance import row_distance

    return row_distance(metric).vector

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class StoreError(VreidError):
    """A store that cannot be opened, created or written as asked; the message names the store and the fix."""


def uri_scheme(uri: str) -> str:
    """"file" for a plain path or file://..., else the URI's scheme ("milvus", "http", ...)."""
    match = _SCHEME.match(str(uri))
    return match.group(1).lower() if match else "file"


def _engine(uri: str) -> Any:
    scheme = uri_scheme(uri)
    if scheme not in STORES:
        raise StoreError(f"{uri}: no gallery store engine for '{scheme}://'; use a folder path (faiss + SQLite), "
                         f"or one of: {', '.join(f'{name}://' for name in STORES.names() if name != 'file')}")
    return STORES.get(scheme)


def store_exists(uri: str) -> bool:
    return bool(_engine(uri).exists(str(uri)))


def open_store(uri: str) -> GalleryStore:
    """The store at `uri`, which must exist (StoreError names the command that makes one)."""
    return _engine(uri)(str(uri), None, False)


def create_store(uri: str, info: StoreInfo, overwrite: bool = False) -> GalleryStore:
    """A new, empty store at `uri`. An existing one is an error unless `overwrite` (then it is removed)."""
    check_info(info, where=str(uri))
    engine = _engine(uri)
    if engine.exists(str(uri)):
        if not overwrite:
            raise StoreError(f"{uri}: a gallery store already exists here; pass --overwrite to replace it, "
                             "or `vreid index add` to add images to it")
        engine.remove(str(uri))
    return engine(str(uri), info, True)


def check_info(info: StoreInfo, where: str) -> None:
    if info.metric not in store_metrics():
        raise StoreError(f"{where}: metric '{info.metric}' is not one of {', '.join(store_metrics())}")
    if int(info.dim) <= 0:
        raise StoreError(f"{where}: embedding width {info.dim} must be positive")


def info_to_json(info: StoreInfo) -> dict[str, Any]:
    return asdict(info)


def info_from_json(obj: dict[str, Any]) -> StoreInfo:
    return StoreInfo(dim=int(obj["dim"]), metric=str(obj.get("metric", "euclidean")), model=dict(obj.get("model", {})))


def check_add(info: StoreInfo, embeddings: np.ndarray, items: Sequence[GalleryItem], where: str) -> np.ndarray:
    """The embeddings as a C-contiguous float32 (N, dim) array, after checking they fit the store and `items`."""
    x = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32))
    if x.ndim != 2 or x.shape[1] != info.dim:
        raise StoreError(f"{where}: embeddings of shape {tuple(x.shape)} do not fit this store of width {info.dim}; "
                         f"embed with the model the store was built with ({info.model.get('run', 'see stats')})")
    if len(x) != len(items):
        raise StoreError(f"{where}: {len(x)} embeddings for {len(items)} items; pass one item per embedding")
    if not np.isfinite(x).all():
        raise StoreError(f"{where}: embeddings hold NaN or infinite values; check the model's weights")
    return x


def check_embedder(info: StoreInfo, dim: int, metric: str, where: str, fix: str) -> None:
    """StoreError unless embeddings of width `dim` ranked by `metric` are what the store holds and ranks by."""
    if dim != info.dim:
        raise StoreError(f"{where}: embeds to width {dim}, but the store holds width {info.dim}; {fix}")
    if metric != info.metric:
        raise StoreError(f"{where}: its embeddings are ranked by '{metric}', but the store was built for "
                         f"'{info.metric}'; {fix}")


def check_queries(info: StoreInfo, queries: np.ndarray, where: str) -> np.ndarray:
    q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
    if q.ndim == 1:
        q = q[None]
    if q.ndim != 2 or q.shape[1] != info.dim:
        raise StoreError(f"{where}: queries of shape {tuple(q.shape)} do not fit this store of width {info.dim}; "
                         "embed them with the store's model")
    return q


def check_window(after: float | None, before: float | None) -> None:
    if after is not None and before is not None and after > before:
        raise StoreError(f"the time window is empty: --after {after} is later than --before {before}")


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as vreid's cosine distance does (torch.nn.functional.normalize, eps 1e-12)."""
    norms = np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(x / norms, dtype=np.float32)
