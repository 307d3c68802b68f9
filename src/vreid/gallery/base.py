"""What every gallery store and every embedder provides: the interfaces `vreid index`, `vreid search` and
`vreid serve` are written against. Implementations register in `STORES` (by URI scheme) and `EMBEDDERS`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np
from PIL import Image

from vreid.registry import Registry


@dataclass(frozen=True)
class GalleryItem:
    """One gallery image: where it is, and what is known of it (None = unknown)."""

    path: str
    camera: int | None = None
    time: float | None = None          # seconds since the epoch (UTC)
    vehicle_id: int | None = None


@dataclass(frozen=True)
class Hit:
    """One search result: the store's id of the item, its distance to the query (smaller = closer), the item."""

    id: int
    distance: float
    item: GalleryItem


@dataclass(frozen=True)
class StoreInfo:
    """Fixed when a store is created: embedding width, the distance it ranks by (the run's `eval.metric`:
    "euclidean" or "cosine"), and the model that made the embeddings (run folder, preprocessing, ...)."""

    dim: int
    metric: str = "euclidean"
    model: dict[str, Any] = field(default_factory=dict)


class GalleryStore(Protocol):
    """A persistent set of (embedding, GalleryItem). Writes are atomic: a process killed during `add` or
    `delete` leaves the previous state readable. Filters (camera, time window) run inside the engine."""

    info: StoreInfo

    def add(self, embeddings: np.ndarray, items: Sequence[GalleryItem]) -> list[int]: ...

    def delete(self, ids: Sequence[int]) -> int: ...

    def search(self, queries: np.ndarray, top_k: int = 10, cameras: Sequence[int] | None = None,
               after: float | None = None, before: float | None = None) -> list[list[Hit]]: ...

    def __len__(self) -> int: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class Embedder(Protocol):
    """Images -> embeddings (N, dim) float32, ranked by `metric` exactly as `vreid eval` ranks that model's."""

    dim: int
    metric: str
    #: run folder, preprocessing (size, mean, std), backend ("torch" or "onnx")
    model: dict[str, Any]

    def embed(self, images: Sequence[Image.Image], cameras: Sequence[int] | None = None,
              viewpoints: Sequence[int] | None = None) -> np.ndarray: ...


#: URI scheme ("file", "milvus", ...) -> opener(uri: str, info: StoreInfo | None, create: bool) -> GalleryStore
STORES: Registry[Any] = Registry("gallery store")

#: backend name ("torch", "onnx") -> loader(path: str) -> Embedder
EMBEDDERS: Registry[Any] = Registry("embedder")
