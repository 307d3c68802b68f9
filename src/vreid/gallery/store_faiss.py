"""The embedded gallery store: a folder holding SQLite (items, filters, commits) and .npy vector segments, searched
in-process with an exact faiss index. Needs no server; it is what a plain path (or file://) opens.

Folder: `store.sqlite` (tables info, segments, items) and `vectors/seg-*.npy`. An `add` takes SQLite's write lock,
writes its vectors to a new segment file (atomically), then inserts the segment and its items in the same
transaction: until that commits, no reader sees any of it, and a process killed before the commit leaves the
previous state (its segment file is an orphan, removed by the next write). Filters are SQL WHERE clauses whose
ids become a faiss IDSelector, so the search ranks only the selected items. A store whose distance faiss cannot
compute (weighted_parts) keeps the rows in a flat index too and is searched exactly: the selected rows are read
back in blocks and scored by the registered distance (vreid.eval.distance), as `vreid eval` scores them.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vreid.fileio import atomic_path
from vreid.gallery.base import STORES, GalleryItem, Hit, StoreInfo
from vreid.gallery.store import (
    StoreError, check_add, check_info, check_queries, check_window, info_from_json, info_to_json, is_vector_metric,
    l2_normalise,
)

FORMAT = 1
DB_NAME = "store.sqlite"
#: Seconds an `add` sleeps between writing its rows and committing them (tests kill it there); unset = none.
PAUSE_ENV = "VREID_STORE_PAUSE_BEFORE_COMMIT"


def pause_before_commit(rows: int) -> None:
    """Tests set PAUSE_ENV (seconds) to kill a writer between writing and committing; otherwise nothing."""
    pause = float(os.environ.get(PAUSE_ENV, "0") or 0)
    if pause:
        print(f"paused before commit ({rows} rows)", flush=True)
        time.sleep(pause)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS segments (id INTEGER PRIMARY KEY AUTOINCREMENT, file TEXT NOT NULL, rows INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL, camera INTEGER, time REAL, vehicle_id INTEGER,
    segment INTEGER NOT NULL REFERENCES segments(id), row INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS items_camera ON items(camera);
CREATE INDEX IF NOT EXISTS items_time ON items(time);
"""


def filter_sql(cameras: Sequence[int] | None, after: float | None, before: float | None) -> tuple[str, list[Any]]:
    """(WHERE clause, parameters) for a camera list and an inclusive time window; ("", []) for no filter.

    Items whose time is unknown never fall inside a window."""
    clauses, params = [], []
    if cameras is not None:
        cams = [int(c) for c in cameras]
        clauses.append(f"camera IN ({','.join('?' * len(cams))})" if cams else "0")
        params += cams
    if after is not None:
        clauses.append("time >= ?")
        params.append(float(after))
    if before is not None:
        clauses.append("time <= ?")
        params.append(float(before))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


@STORES.register("file")
class FaissSqliteStore:
    """A `GalleryStore` in a folder; every method is safe to call from several threads."""

    def __init__(self, uri: str, info: StoreInfo | None = None, create: bool = False) -> None:
        self.uri = uri
        self.folder = self.folder_of(uri)
        self._lock = threading.RLock()
        db = self.folder / DB_NAME
        if create:
            if info is None:
                raise StoreError(f"{uri}: creating a store needs its StoreInfo (dim, metric, model)")
            check_info(info, uri)
            if self.folder.exists() and any(self.folder.iterdir()) and not db.exists():
                raise StoreError(f"{self.folder}: folder is not empty and holds no {DB_NAME}; choose a new or empty "
                                 "folder for the gallery store")
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / "vectors").mkdir(exist_ok=True)
        elif not db.is_file():
            raise StoreError(f"{uri}: no gallery store here ({db} is missing); build one with "
                             f"`vreid index build {uri} --checkpoint RUN --images DIR`")
        self._db = sqlite3.connect(db, check_same_thread=False, isolation_level=None, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        if create:
            self._db.executescript(_SCHEMA)
            with self._write():
                self._db.execute("INSERT OR REPLACE INTO info VALUES ('store_info', ?), ('format', ?), "
                                 "('generation', '0')", (json.dumps(info_to_json(info)), str(FORMAT)))
        row = self._db.execute("SELECT value FROM info WHERE key='store_info'").fetchone()
        if row is None:
            raise StoreError(f"{db}: not a complete gallery store (no store_info); rebuild it with "
                             f"`vreid index build {uri} ... --overwrite`")
        self.info = info_from_json(json.loads(row[0]))
        self._index = None
        self._generation = -1
        self._refresh()

    # -- the folder ---------------------------------------------------------------------------------------
    @staticmethod
    def folder_of(uri: str) -> Path:
        return Path(uri[len("file://"):] if uri.startswith("file://") else uri)

    @classmethod
    def exists(cls, uri: str) -> bool:
        return (cls.folder_of(uri) / DB_NAME).is_file()

    @classmethod
    def remove(cls, uri: str) -> None:
        folder = cls.folder_of(uri)
        if (folder / DB_NAME).is_file():
            shutil.rmtree(folder)

    # -- transactions -------------------------------------------------------------------------------------
    class _Txn:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")  # the write lock, before anything is written
            return self.db

        def __exit__(self, kind, value, tb) -> None:
            self.db.execute("COMMIT" if kind is None else "ROLLBACK")

    def _write(self) -> "_Txn":
        return self._Txn(self._db)

    def _stored_generation(self) -> int:
        return int(self._db.execute("SELECT value FROM info WHERE key='generation'").fetchone()[0])

    def _bump_generation(self) -> int:
        gen = self._stored_generation() + 1
        self._db.execute("UPDATE info SET value=? WHERE key='generation'", (str(gen),))
        return gen

    # -- the in-memory index ------------------------------------------------------------------------------
    def _new_index(self):
        import faiss

        flat = faiss.IndexFlatIP(self.info.dim) if self.info.metric == "cosine" else faiss.IndexFlatL2(self.info.dim)
        return faiss.IndexIDMap2(flat)

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        return l2_normalise(x) if self.info.metric == "cosine" else x

    def _refresh(self) -> None:
        """Reload the vectors if another process (or this one) committed since they were loaded."""
        gen = self._stored_generation()
        if gen == self._generation and self._index is not None:
            return
        index = self._new_index()
        segments = dict(self._db.execute("SELECT id, file FROM segments").fetchall())
        rows = np.array(self._db.execute("SELECT id, segment, row FROM items ORDER BY segment, row").fetchall(),
                        dtype=np.int64).reshape(-1, 3)
        for seg in np.unique(rows[:, 1]):
            part = rows[rows[:, 1] == seg]
            vectors = np.load(self.folder / "vectors" / segments[int(seg)], mmap_mode="r")
            index.add_with_ids(self._prepare(np.ascontiguousarray(vectors[part[:, 2]], dtype=np.float32)), part[:, 0])
        self._index, self._generation = index, gen

    # -- writes ---------------------------------------------------------------------------------------------
    def _remove_orphans(self, db: sqlite3.Connection) -> None:
        """Segment files no committed segment names (left by a killed `add`); called holding the write lock."""
        known = {name for (name,) in db.execute("SELECT file FROM segments")}
        for path in (self.folder / "vectors").iterdir():
            if path.name not in known:
                path.unlink(missing_ok=True)

    def add(self, embeddings: np.ndarray, items: Sequence[GalleryItem]) -> list[int]:
        x = check_add(self.info, embeddings, items, self.uri)
        if not len(x):
            return []
        with self._lock, self._write() as db:
            stale = self._stored_generation() != self._generation
            self._remove_orphans(db)
            name = f"seg-{uuid.uuid4().hex}.npy"
            with atomic_path(self.folder / "vectors" / name) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, x)
                    f.flush()
                    os.fsync(f.fileno())
            seg = db.execute("INSERT INTO segments (file, rows) VALUES (?, ?)", (name, len(x))).lastrowid
            db.executemany(
                "INSERT INTO items (path, camera, time, vehicle_id, segment, row) VALUES (?, ?, ?, ?, ?, ?)",
                [(str(it.path), _opt_int(it.camera), _opt_float(it.time), _opt_int(it.vehicle_id), seg, row)
                 for row, it in enumerate(items)])
            ids = [i for (i,) in db.execute("SELECT id FROM items WHERE segment=? ORDER BY row", (seg,))]
            gen = self._bump_generation()
            pause_before_commit(len(ids))
        if stale:
            self._refresh()
        else:
            self._index.add_with_ids(self._prepare(x), np.asarray(ids, dtype=np.int64))
            self._generation = gen
        return ids

    def delete(self, ids: Sequence[int]) -> int:
        ids = sorted({int(i) for i in ids})
        if not ids:
            return 0
        with self._lock:
            with self._write() as db:
                stale = self._stored_generation() != self._generation
                db.execute("CREATE TEMP TABLE IF NOT EXISTS doomed (id INTEGER PRIMARY KEY)")
                db.execute("DELETE FROM doomed")
                db.executemany("INSERT INTO doomed VALUES (?)", [(i,) for i in ids])
                removed = db.execute("DELETE FROM items WHERE id IN (SELECT id FROM doomed)").rowcount
                dead = db.execute("SELECT file FROM segments WHERE id NOT IN (SELECT DISTINCT segment FROM items)"
                                  ).fetchall()
                db.execute("DELETE FROM segments WHERE id NOT IN (SELECT DISTINCT segment FROM items)")
                gen = self._bump_generation() if removed else self._generation
            for (name,) in dead:  # after the commit: until then they were still readable
                (self.folder / "vectors" / name).unlink(missing_ok=True)
            if stale:
                self._refresh()
            elif removed:
                self._index.remove_ids(np.asarray(ids, dtype=np.int64))
                self._generation = gen
            return removed

    # -- reads ----------------------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, top_k: int = 10, cameras: Sequence[int] | None = None,
               after: float | None = None, before: float | None = None) -> list[list[Hit]]:
        import faiss

        q = self._prepare(check_queries(self.info, queries, self.uri))
        check_window(after, before)
        with self._lock:
            self._refresh()
            where, params = filter_sql(cameras, after, before)
            if not is_vector_metric(self.info.metric):
                ids = np.fromiter((i for (i,) in self._db.execute(f"SELECT id FROM items{where} ORDER BY id", params)),
                                  dtype=np.int64)
                found, dist = self._search_by_distance(q, ids, int(top_k))
                items = self._items(np.unique(found).tolist())
                return [[Hit(int(i), float(d), items[int(i)]) for d, i in zip(row_d, row_i)]
                        for row_d, row_i in zip(dist, found)]
            params_faiss = None
            if where:
                selected = np.fromiter((i for (i,) in self._db.execute(f"SELECT id FROM items{where}", params)),
                                       dtype=np.int64)
                if not len(selected):
                    return [[] for _ in range(len(q))]
                params_faiss = faiss.SearchParameters(sel=faiss.IDSelectorBatch(selected))
            k = max(0, min(int(top_k), self._index.ntotal))
            if k == 0:
                return [[] for _ in range(len(q))]
            scores, found = self._index.search(q, k, params=params_faiss)
            items = self._items(np.unique(found[found >= 0]).tolist())
        return [[Hit(int(i), self._distance(s), items[int(i)]) for s, i in zip(row_s, row_i) if i >= 0]
                for row_s, row_i in zip(scores, found)]

    def _search_by_distance(self, q: np.ndarray, ids: np.ndarray, top_k: int, block_rows: int = 65536
                            ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, distances), each len(q) x k, of the k nearest of `ids` by the store's registered distance: the
        rows read back `block_rows` at a time, each block's top k merged into the running best (ties to the
        lower id); memory stays bounded by the block."""
        import torch

        from vreid.eval.distance import row_distance
        from vreid.rerank.knn import stable_topk

        k = max(0, min(top_k, len(ids)))
        if k == 0:
            return np.zeros((len(q), 0), np.int64), np.zeros((len(q), 0), np.float32)
        distance = row_distance(self.info.metric)
        queries = distance.prepare(torch.from_numpy(q))
        best_d = torch.full((len(q), 0), float("inf"))
        best_i = torch.zeros((len(q), 0), dtype=torch.int64)
        for start in range(0, len(ids), block_rows):
            part = ids[start:start + block_rows]
            rows = distance.prepare(torch.from_numpy(self._index.reconstruct_batch(part).astype(np.float32)))
            d = distance.block(queries, rows, distance.gallery_state(rows))
            d, at = stable_topk(torch.cat([best_d, d], 1), k)   # earlier (lower) ids first: ties keep them
            best_i = torch.cat([best_i, torch.from_numpy(part).expand(len(q), -1)], 1).gather(1, at)
            best_d = d
        return best_i.numpy(), best_d.numpy()

    def _distance(self, score: float) -> float:
        if self.info.metric == "cosine":
            return float(1.0 - score)
        return float(np.sqrt(max(float(score), 0.0)))

    def _items(self, ids: Sequence[int]) -> dict[int, GalleryItem]:
        out = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start:start + 500])
            rows = self._db.execute(f"SELECT id, path, camera, time, vehicle_id FROM items WHERE id IN "
                                    f"({','.join('?' * len(chunk))})", chunk)
            out.update({i: GalleryItem(p, c, t, v) for i, p, c, t, v in rows})
        return out

    def items(self, ids: Sequence[int]) -> dict[int, GalleryItem]:
        """The stored items of `ids` (ids not in the store are left out)."""
        with self._lock:
            return self._items([int(i) for i in ids])

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """The embeddings of `ids` as ranked (unit length for cosine), (len(ids), dim) float32."""
        with self._lock:
            self._refresh()
            if not len(ids):
                return np.zeros((0, self.info.dim), np.float32)
            return self._index.reconstruct_batch(np.asarray(ids, dtype=np.int64)).astype(np.float32)

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def stats(self) -> dict[str, Any]:
        with self._lock:
            n, cams, t0, t1, ids = self._db.execute(
                "SELECT COUNT(*), COUNT(DISTINCT camera), MIN(time), MAX(time), COUNT(DISTINCT vehicle_id) FROM items"
            ).fetchone()
            segments = self._db.execute("SELECT COUNT(*) FROM segments").fetchone()[0]
        size = sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file())
        return {"uri": self.uri, "engine": "faiss+sqlite", "items": n, "dim": self.info.dim,
                "metric": self.info.metric, "cameras": cams, "vehicle_ids": ids, "time_min": t0, "time_max": t1,
                "segments": segments, "disk_bytes": size, "model": self.info.model}

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            self._index = None

    def __enter__(self) -> "FaissSqliteStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)
