"""What the HTTP routes call: search, add and delete on one gallery store, safe from many threads.

Embedding runs outside any lock; store calls take a readers-writer lock, so searches run side by side and an
add or delete waits for the searches in flight (and new searches wait for it)."""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image

from vreid.errors import VreidError
from vreid.fileio import write_bytes_atomic
from vreid.gallery.base import Embedder, GalleryItem, GalleryStore, Hit
from vreid.serve.uploads import RequestError, image_suffix

MAX_TOP_K = 1000
#: id -> item of the hits and additions this service has answered with: the images the page may fetch.
KNOWN_ITEMS_LIMIT = 200_000


class ReadWriteLock:
    """Many readers or one writer; a waiting writer holds back new readers (adds are not starved)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


@dataclass
class ServiceLimits:
    max_upload_bytes: int
    max_image_pixels: int


class GalleryService:
    """One store + one embedder. `upload_dir` receives the images added through the service."""

    def __init__(self, store: GalleryStore, embedder: Embedder, upload_dir: str | Path | None,
                 limits: ServiceLimits) -> None:
        if embedder.dim != store.info.dim:
            raise VreidError(f"the embedder makes {embedder.dim}-d embeddings but the store holds "
                             f"{store.info.dim}-d ones; serve the store with the model that built it "
                             f"(its StoreInfo.model: {store.info.model})")
        self.store, self.embedder, self.limits = store, embedder, limits
        self.upload_dir = Path(upload_dir) if upload_dir is not None else None
        self.lock = ReadWriteLock()
        self._known: OrderedDict[int, GalleryItem] = OrderedDict()
        self._known_lock = threading.Lock()
        self.counts = {"searches": 0, "adds": 0, "deletes": 0}

    def _remember(self, pairs: Sequence[tuple[int, GalleryItem]]) -> None:
        with self._known_lock:
            for i, item in pairs:
                self._known[i] = item
                self._known.move_to_end(i)
            while len(self._known) > KNOWN_ITEMS_LIMIT:
                self._known.popitem(last=False)

    def _count(self, what: str) -> None:
        with self._known_lock:
            self.counts[what] += 1

    def item(self, item_id: int) -> GalleryItem:
        """The gallery item `item_id`: one this service returned in a search or an add (and has not deleted), or
        one the store finds by id, where the store can look ids up (an `items(ids)` method)."""
        with self._known_lock:
            found = self._known.get(item_id)
        lookup = getattr(self.store, "items", None)  # not in the Protocol; the folder store has it
        if found is None and callable(lookup):
            with self.lock.reading():
                found = lookup([item_id]).get(item_id)
        if found is None:
            raise RequestError(404, f"no gallery image {item_id} among the results this service has returned; "
                                    "search first, or the item was deleted")
        return found

    def embed(self, image: Image.Image, camera: int | None = None) -> np.ndarray:
        cameras = None if camera is None else [camera]
        return np.asarray(self.embedder.embed([image], cameras=cameras), dtype=np.float32).reshape(1, -1)

    def search_embedding(self, query: np.ndarray, top_k: int = 10, cameras: Sequence[int] | None = None,
                         after: float | None = None, before: float | None = None) -> list[Hit]:
        if not 1 <= top_k <= MAX_TOP_K:
            raise RequestError(400, f"top={top_k} is out of range; give 1 to {MAX_TOP_K}")
        if after is not None and before is not None and after > before:
            raise RequestError(400, f"after={after} is later than before={before}; swap them")
        with self.lock.reading():
            hits = self.store.search(query.reshape(1, -1), top_k=top_k, cameras=cameras, after=after,
                                     before=before)[0]
        self._remember([(h.id, h.item) for h in hits])
        self._count("searches")
        return hits

    def search(self, image: Image.Image, top_k: int = 10, cameras: Sequence[int] | None = None,
               after: float | None = None, before: float | None = None, camera: int | None = None) -> list[Hit]:
        return self.search_embedding(self.embed(image, camera), top_k, cameras, after, before)

    def add(self, data: bytes, image: Image.Image, camera: int | None = None, time: float | None = None,
            vehicle_id: int | None = None) -> tuple[int, GalleryItem]:
        """Save the upload under `upload_dir` (named by its content hash), embed it, add it to the store."""
        if self.upload_dir is None:
            raise RequestError(403, "this service was started without an upload folder, so it cannot add "
                                    "images; restart it with --uploads DIR")
        path = self.upload_dir / f"{hashlib.sha256(data).hexdigest()[:32]}{image_suffix(data)}"
        if not path.exists():
            write_bytes_atomic(path, data)
        item = GalleryItem(path=str(path.resolve()), camera=camera, time=time, vehicle_id=vehicle_id)
        embedding = self.embed(image, camera)
        with self.lock.writing():
            (new_id,) = self.store.add(embedding, [item])
        self._remember([(new_id, item)])
        self._count("adds")
        return new_id, item

    def delete(self, item_id: int) -> None:
        with self.lock.writing():
            removed = self.store.delete([item_id])
        if not removed:
            raise RequestError(404, f"no gallery item with id {item_id}")
        with self._known_lock:
            self._known.pop(item_id, None)
        self._count("deletes")

    def stats(self) -> dict[str, Any]:
        with self.lock.reading():
            size, store_stats = len(self.store), self.store.stats()
        info = self.store.info
        return {"items": size, "dim": info.dim, "metric": info.metric, "model": info.model, "store": store_stats,
                "service": {**self.counts, "max_upload_bytes": self.limits.max_upload_bytes,
                            "max_image_pixels": self.limits.max_image_pixels,
                            "can_add": self.upload_dir is not None}}
