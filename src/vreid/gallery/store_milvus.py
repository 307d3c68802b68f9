"""The Milvus gallery store, through pymilvus: `milvus://gallery.db` is a milvus-lite file (embedded, no server),
`milvus://host:19530` or `http://host:19530` a Milvus server or cluster; the same code serves both.

One collection (default "vreid_gallery", `?collection=NAME` to choose) with an exact FLAT index; the StoreInfo
lives in its properties. Milvus has no transactions, so an `add` first records its batch number as pending (in the
properties), inserts its rows in chunks, then clears it: searches leave pending batches out, and the next write
deletes the rows of a batch whose writer died. Filters are Milvus boolean expressions, evaluated by the engine.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import parse_qs, urlsplit

import numpy as np

from vreid.gallery.base import STORES, GalleryItem, Hit, StoreInfo
from vreid.gallery.store import (
    StoreError, check_add, check_info, check_queries, check_window, info_from_json, info_to_json, is_vector_metric,
    l2_normalise,
)
from vreid.gallery.store_faiss import pause_before_commit

DEFAULT_COLLECTION = "vreid_gallery"
INFO_KEY = "vreid.store_info"
PENDING_KEY = "vreid.pending"
#: Rows per insert request (a request must stay under the server's message size).
INSERT_CHUNK = 8192
#: Milvus returns at most this many hits per query.
MAX_TOP_K = 16384
_FIELDS = ["path", "camera", "time", "vehicle_id"]


def milvus_target(uri: str) -> tuple[str, str]:
    """(what MilvusClient connects to, collection name) for milvus://file.db, milvus://host:port, http(s)://..."""
    parts = urlsplit(uri)
    collection = parse_qs(parts.query).get("collection", [DEFAULT_COLLECTION])[0]
    rest = uri.split("://", 1)[1].split("?", 1)[0]
    if parts.scheme in ("http", "https"):
        return f"{parts.scheme}://{parts.netloc}{parts.path}", collection
    if rest.endswith(".db"):  # milvus-lite: milvus://relative/file.db or milvus:///absolute/file.db
        return rest, collection
    return f"http://{rest}", collection


def milvus_filter(cameras: Sequence[int] | None, after: float | None, before: float | None,
                  pending: Sequence[int] = ()) -> str:
    """A Milvus boolean expression for a camera list and an inclusive time window ("" for none); rows of
    uncommitted batches are left out. Items whose time is unknown (null) never fall inside a window."""
    clauses = []
    if cameras is not None:
        clauses.append(f"camera in [{', '.join(str(int(c)) for c in cameras)}]")
    if after is not None:
        clauses.append(f"time >= {float(after)!r}")
    if before is not None:
        clauses.append(f"time <= {float(before)!r}")
    if pending:
        clauses.append(f"batch not in [{', '.join(str(int(b)) for b in pending)}]")
    return " and ".join(clauses)


def _is_lite(target: str) -> bool:
    return not target.startswith(("http://", "https://"))


#: milvus-lite runs one in-process server per .db, holding its LOCK until released: open stores per file.
_LITE_USERS: dict[str, int] = {}
_LITE_LOCK = threading.Lock()


def _release(client: Any, target: str) -> None:
    """Close a client; the last one of a milvus-lite file also stops its server (so other processes may open it)."""
    client.close()
    if not _is_lite(target):
        return
    key = str(Path(target).resolve())
    with _LITE_LOCK:
        _LITE_USERS[key] = _LITE_USERS.get(key, 1) - 1
        if _LITE_USERS[key] <= 0:
            del _LITE_USERS[key]
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(target)


def _check_lite_lock(target: str) -> None:
    """milvus-lite lets one process open a .db at a time: say so (and who to ask) instead of "open failed"."""
    import fcntl

    lock = Path(target) / "LOCK"
    if not lock.is_file():
        return
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise StoreError(f"{target}: another process has this milvus-lite store open (a `vreid serve`?); "
                             "milvus-lite allows one process at a time: stop it, or add through it (the service's "
                             "/api/gallery), or use a folder store or a Milvus server for shared access") from None
        fcntl.flock(f, fcntl.LOCK_UN)


def _client(target: str):
    if _is_lite(target):
        key = str(Path(target).resolve())
        with _LITE_LOCK:
            if key not in _LITE_USERS:  # no server of ours on it yet
                _check_lite_lock(target)
            _LITE_USERS[key] = _LITE_USERS.get(key, 0) + 1
        try:
            return _connect(target)
        except BaseException:
            with _LITE_LOCK:
                _LITE_USERS[key] -= 1
                if not _LITE_USERS[key]:
                    del _LITE_USERS[key]
            raise
    return _connect(target)


def _connect(target: str):
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise StoreError("milvus:// stores need pymilvus (and milvus-lite for .db files): "
                         "pip install 'vreid[milvus]'") from None
    if _is_lite(target):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
    try:
        return MilvusClient(target)
    except Exception as e:  # noqa: BLE001 - pymilvus raises its own types for unreachable servers
        raise StoreError(f"{target}: cannot connect to Milvus ({e}); check the address, or use "
                         "milvus://FILE.db for an embedded milvus-lite store") from None


@STORES.register("milvus")
@STORES.register("http")
@STORES.register("https")
class MilvusStore:
    """A `GalleryStore` in a Milvus collection (milvus-lite file or server)."""

    def __init__(self, uri: str, info: StoreInfo | None = None, create: bool = False) -> None:
        self.uri = uri
        self.target, self.collection = milvus_target(uri)
        self._lock = threading.RLock()
        if not create and _is_lite(self.target) and not Path(self.target).exists():
            raise StoreError(f"{uri}: no gallery store here ({self.target} is missing); build one with "
                             f"`vreid index build {uri} --checkpoint RUN --images DIR`")
        self._client = _client(self.target)
        try:
            self.info = self._open(info, create)
        except BaseException:
            self.close()
            raise

    def _open(self, info: StoreInfo | None, create: bool) -> StoreInfo:
        if create:
            if info is None:
                raise StoreError(f"{self.uri}: creating a store needs its StoreInfo (dim, metric, model)")
            check_info(info, self.uri)
            if not is_vector_metric(info.metric):
                raise StoreError(f"{self.uri}: Milvus ranks by L2 or cosine only, not the '{info.metric}' distance "
                                 "this model ranks by; use a folder store (a plain path), which scores it exactly")
            self._create(info)
        elif not self._client.has_collection(self.collection):
            raise StoreError(f"{self.uri}: Milvus has no collection '{self.collection}'; build it with "
                             f"`vreid index build {self.uri} --checkpoint RUN --images DIR`")
        props = self._properties()
        if INFO_KEY not in props:
            raise StoreError(f"{self.uri}: collection '{self.collection}' was not made by vreid (no {INFO_KEY}); "
                             "choose another with ?collection=NAME")
        self._client.load_collection(self.collection)  # a restarted server (or milvus-lite) starts it released
        return info_from_json(json.loads(props[INFO_KEY]))

    def _create(self, info: StoreInfo) -> None:
        from pymilvus import DataType, MilvusClient

        if self._client.has_collection(self.collection):
            raise StoreError(f"{self.uri}: collection '{self.collection}' already exists; pass --overwrite "
                             "to replace it")
        schema = MilvusClient.create_schema(auto_id=True, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(info.dim))
        schema.add_field("path", DataType.VARCHAR, max_length=65535)
        schema.add_field("camera", DataType.INT64, nullable=True)
        schema.add_field("time", DataType.DOUBLE, nullable=True)
        schema.add_field("vehicle_id", DataType.INT64, nullable=True)
        schema.add_field("batch", DataType.INT64)
        index = self._client.prepare_index_params()
        index.add_index("vector", index_type="FLAT", metric_type="COSINE" if info.metric == "cosine" else "L2")
        self._client.create_collection(self.collection, schema=schema, index_params=index,
                                       consistency_level="Strong")
        self._client.alter_collection_properties(self.collection, properties={
            INFO_KEY: json.dumps(info_to_json(info)), PENDING_KEY: "[]"})

    @classmethod
    def exists(cls, uri: str) -> bool:
        target, collection = milvus_target(uri)
        if _is_lite(target) and not Path(target).exists():
            return False
        client = _client(target)
        try:
            return bool(client.has_collection(collection))
        finally:
            _release(client, target)

    @classmethod
    def remove(cls, uri: str) -> None:
        target, collection = milvus_target(uri)
        client = _client(target)
        try:
            if client.has_collection(collection):
                client.drop_collection(collection)
        finally:
            _release(client, target)

    # -- pending batches ------------------------------------------------------------------------------------
    def _properties(self) -> dict[str, str]:
        return dict(self._client.describe_collection(self.collection).get("properties", {}))

    def _pending(self) -> list[int]:
        return [int(b) for b in json.loads(self._properties().get(PENDING_KEY, "[]"))]

    def _set_pending(self, pending: Sequence[int]) -> None:
        self._client.alter_collection_properties(self.collection, properties={PENDING_KEY: json.dumps(list(pending))})

    def _clean_pending(self) -> None:
        """Delete the rows of batches whose writer died before it finished (it would have cleared them)."""
        pending = self._pending()
        if pending:
            self._client.delete(self.collection, filter=f"batch in [{', '.join(map(str, pending))}]")
            self._set_pending([])

    # -- writes -----------------------------------------------------------------------------------------------
    def add(self, embeddings: np.ndarray, items: Sequence[GalleryItem]) -> list[int]:
        x = check_add(self.info, embeddings, items, self.uri)
        if not len(x):
            return []
        with self._lock:
            self._clean_pending()
            batch = time.time_ns()
            self._set_pending([batch])
            ids: list[int] = []
            for start in range(0, len(x), INSERT_CHUNK):
                rows = [{"vector": v, "path": str(it.path), "camera": _opt(int, it.camera),
                         "time": _opt(float, it.time), "vehicle_id": _opt(int, it.vehicle_id), "batch": batch}
                        for v, it in zip(x[start:start + INSERT_CHUNK], items[start:start + INSERT_CHUNK])]
                ids += [int(i) for i in self._client.insert(self.collection, rows)["ids"]]
            self._client.flush(self.collection)  # sealed on disk (and searched by the index) before it counts
            pause_before_commit(len(ids))
            self._set_pending([])
            return ids

    def delete(self, ids: Sequence[int]) -> int:
        ids = sorted({int(i) for i in ids})
        if not ids:
            return 0
        with self._lock:
            self._clean_pending()
            present = self._client.query(self.collection, filter=f"id in {ids}", output_fields=["id"])
            if present:
                self._client.delete(self.collection, ids=[int(r["id"]) for r in present])
            return len(present)

    # -- reads ------------------------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, top_k: int = 10, cameras: Sequence[int] | None = None,
               after: float | None = None, before: float | None = None) -> list[list[Hit]]:
        q = check_queries(self.info, queries, self.uri)
        check_window(after, before)
        k = max(0, min(int(top_k), MAX_TOP_K))
        if k == 0 or (cameras is not None and not list(cameras)):
            return [[] for _ in range(len(q))]
        with self._lock:
            expr = milvus_filter(cameras, after, before, self._pending())
            results = self._client.search(self.collection, data=q.tolist(), filter=expr, limit=k,
                                          output_fields=_FIELDS, anns_field="vector")
        return [[Hit(int(r["id"]), self._distance(r["distance"]), _item(r["entity"])) for r in row]
                for row in results]

    def _distance(self, score: float) -> float:
        if self.info.metric == "cosine":  # Milvus COSINE is the similarity
            return float(1.0 - score)
        return float(np.sqrt(max(float(score), 0.0)))  # Milvus L2 is the squared distance

    def items(self, ids: Sequence[int]) -> dict[int, GalleryItem]:
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        with self._lock:
            rows = self._client.get(self.collection, ids=ids, output_fields=_FIELDS)
        return {int(r["id"]): _item(r) for r in rows}

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """The embeddings of `ids` as ranked (unit length for cosine), (len(ids), dim) float32."""
        ids = [int(i) for i in ids]
        if not ids:
            return np.zeros((0, self.info.dim), np.float32)
        with self._lock:
            rows = {int(r["id"]): r["vector"] for r in self._client.get(self.collection, ids=ids,
                                                                         output_fields=["vector"])}
        x = np.asarray([rows[i] for i in ids], dtype=np.float32)
        return l2_normalise(x) if self.info.metric == "cosine" else x

    def __len__(self) -> int:
        with self._lock:
            expr = milvus_filter(None, None, None, self._pending())
            rows = self._client.query(self.collection, filter=expr, output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def stats(self) -> dict[str, Any]:
        size = _disk_bytes(Path(self.target)) if _is_lite(self.target) else None
        return {"uri": self.uri, "engine": "milvus-lite" if _is_lite(self.target) else "milvus",
                "collection": self.collection, "items": len(self), "dim": self.info.dim,
                "metric": self.info.metric, "disk_bytes": size, "model": self.info.model}

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                _release(self._client, self.target)
                self._client = None

    def __enter__(self) -> "MilvusStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _disk_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _opt(kind: type, value: Any) -> Any:
    return None if value is None else kind(value)


def _item(row: dict[str, Any]) -> GalleryItem:
    return GalleryItem(row["path"], row.get("camera"), row.get("time"), row.get("vehicle_id"))
