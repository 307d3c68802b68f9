"""Gallery stores (faiss + SQLite folder, milvus-lite): filters inside the engine equal a brute-force filter,
writes are atomic (a killed `add` leaves the previous state), reopening gives the same results, and a store
ranks a run's gallery as `vreid eval` does."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from vreid.gallery.base import GalleryItem, StoreInfo
from vreid.gallery.search import parse_time, search_store
from vreid.gallery.store import StoreError, create_store, open_store, uri_scheme
from vreid.gallery.store_faiss import PAUSE_ENV, filter_sql
from vreid.gallery.store_milvus import milvus_filter, milvus_target

ENGINES = ("faiss", "milvus")


def store_uri(engine: str, folder: Path) -> str:
    return str(folder / "store") if engine == "faiss" else f"milvus://{folder}/store.db"


def world(n: int = 240, dim: int = 12, seed: int = 0):
    """Clustered embeddings; cameras 0..4; times 0..n-1 except every 7th unknown."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, dim)) * 3
    x = (centres[rng.integers(0, 12, n)] + rng.normal(size=(n, dim))).astype(np.float32)
    items = [GalleryItem(f"img/{i}.jpg", camera=i % 5, time=None if i % 7 == 0 else float(i), vehicle_id=i // 4)
             for i in range(n)]
    return x, items


def brute_force(x, items, q, metric, k, cameras=None, after=None, before=None):
    """(positions, distances) of the k nearest items that pass the filter, by a full distance matrix."""
    keep = np.array([(cameras is None or it.camera in cameras)
                     and (after is None or (it.time is not None and it.time >= after))
                     and (before is None or (it.time is not None and it.time <= before)) for it in items])
    if metric == "cosine":
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        d = 1 - (q / np.linalg.norm(q, axis=1, keepdims=True)) @ xn.T
    else:
        d = np.linalg.norm(q[:, None] - x[None], axis=2)
    d[:, ~keep] = np.inf
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return [[(int(i), float(d[r, i])) for i in row if np.isfinite(d[r, i])] for r, row in enumerate(order)]


FILTERS = [dict(), dict(cameras=[1, 3]), dict(after=50.0, before=180.0), dict(cameras=[2], after=100.0),
           dict(cameras=[4], before=30.0), dict(cameras=[9]), dict(cameras=[0], after=1e9)]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_filtered_search_equals_brute_force(engine, metric, tmp_path):
    x, items = world()
    q = np.random.default_rng(1).normal(size=(4, x.shape[1])).astype(np.float32) * 3
    with create_store(store_uri(engine, tmp_path), StoreInfo(x.shape[1], metric)) as store:
        ids = store.add(x[:100], items[:100]) + store.add(x[100:], items[100:])
        position = {i: p for p, i in enumerate(ids)}
        for filters in FILTERS:
            got = store.search(q, 7, **filters)
            want = brute_force(x, items, q, metric, 7, **filters)
            for hits, expected in zip(got, want):
                assert [position[h.id] for h in hits] == [p for p, _ in expected], filters
                np.testing.assert_allclose([h.distance for h in hits], [d for _, d in expected], atol=1e-4)
                for h in hits:
                    assert h.item == items[position[h.id]]


@pytest.mark.parametrize("engine", ENGINES)
def test_delete_reopen_and_ids(engine, tmp_path):
    x, items = world(120)
    uri = store_uri(engine, tmp_path)
    q = x[:3] + 0.01
    with create_store(uri, StoreInfo(x.shape[1], "euclidean", {"run": "runs/x"})) as store:
        first = store.add(x[:60], items[:60])
        second = store.add(x[60:], items[60:])
        assert len(set(first + second)) == 120 and len(store) == 120
        assert store.delete([first[0], first[1], 10**12]) == 2
        assert len(store) == 118
        before = store.search(q, 5, cameras=[0, 1, 2])
        assert all(h.id not in (first[0], first[1]) for row in before for h in row)
        np.testing.assert_allclose(store.vectors([second[0]]), x[60:61], atol=1e-6)
    with open_store(uri) as store:
        assert store.info == StoreInfo(x.shape[1], "euclidean", {"run": "runs/x"})
        assert len(store) == 118
        assert store.search(q, 5, cameras=[0, 1, 2]) == before
        third = store.add(x[:2], items[:2])
        assert not set(third) & set(first + second)  # deleted ids are not given out again
        assert store.stats()["items"] == 120


@pytest.mark.parametrize("engine", ENGINES)
def test_store_errors_name_the_fix(engine, tmp_path):
    uri = store_uri(engine, tmp_path)
    with pytest.raises(StoreError, match="vreid index build"):
        open_store(uri)
    with create_store(uri, StoreInfo(4)) as store:
        with pytest.raises(StoreError, match="width 4"):
            store.add(np.zeros((2, 5), np.float32), [GalleryItem("a"), GalleryItem("b")])
        with pytest.raises(StoreError, match="one item per embedding"):
            store.add(np.zeros((2, 4), np.float32), [GalleryItem("a")])
        with pytest.raises(StoreError, match="later than"):
            store.search(np.zeros((1, 4), np.float32), after=5, before=1)
    with pytest.raises(StoreError, match="--overwrite"):
        create_store(uri, StoreInfo(4))
    with create_store(uri, StoreInfo(4, "cosine"), overwrite=True) as store:
        assert len(store) == 0 and store.info.metric == "cosine"
    with pytest.raises(StoreError, match="metric"):
        create_store(str(tmp_path / "other"), StoreInfo(4, "manhattan"))
    with pytest.raises(StoreError, match="no gallery store engine"):
        open_store("ftp://host/x")


KILLED_ADD = textwrap.dedent("""
    import sys
    import numpy as np
    from vreid.gallery.base import GalleryItem
    from vreid.gallery.store import open_store
    store = open_store(sys.argv[1])
    x = np.ones((50, store.info.dim), np.float32)
    store.add(x, [GalleryItem(f"new/{i}.jpg", camera=0, time=1.0) for i in range(50)])
    print("committed", flush=True)
""")


@pytest.mark.parametrize("engine", ENGINES)
def test_add_killed_before_commit_leaves_previous_state(engine, tmp_path):
    x, items = world(80)
    uri = store_uri(engine, tmp_path)
    q = x[:4]
    with create_store(uri, StoreInfo(x.shape[1])) as store:
        store.add(x, items)
        before = store.search(q, 6)
    env = dict(os.environ, **{PAUSE_ENV: "60"})
    proc = subprocess.Popen([sys.executable, "-c", KILLED_ADD, uri], stdout=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("paused before commit"), line
    finally:
        os.killpg(proc.pid, 9)  # milvus-lite's server child too
        proc.wait()
    with open_store(uri) as store:
        assert len(store) == 80
        assert store.search(q, 6) == before
        store.add(x[:1], items[:1])  # the next write cleans up after the dead one
        assert len(store) == 81
    if engine == "faiss":
        from vreid.gallery.store_faiss import DB_NAME  # noqa: F401 - one segment per committed add, no orphan
        assert len(list((tmp_path / "store" / "vectors").iterdir())) == 2


def test_filters_are_engine_expressions():
    assert filter_sql([1, 2], 5.0, None) == (" WHERE camera IN (?,?) AND time >= ?", [1, 2, 5.0])
    assert filter_sql(None, None, None) == ("", [])
    assert milvus_filter([3], None, 9.5) == "camera in [3] and time <= 9.5"
    assert milvus_filter(None, None, None, pending=[7]) == "batch not in [7]"


def test_uris_pick_the_engine():
    assert uri_scheme("galleries/veri") == "file" and uri_scheme("file:///g") == "file"
    assert uri_scheme("milvus://g.db") == "milvus" and uri_scheme("http://h:19530") == "http"
    assert milvus_target("milvus://data/g.db") == ("data/g.db", "vreid_gallery")
    assert milvus_target("milvus:///abs/g.db?collection=cars") == ("/abs/g.db", "cars")
    assert milvus_target("milvus://db-host:19530") == ("http://db-host:19530", "vreid_gallery")
    assert milvus_target("https://db-host:443?collection=c") == ("https://db-host:443", "c")


def test_times_parse_iso_and_epoch():
    assert parse_time("1714564800") == 1714564800.0
    assert parse_time("2024-05-01T12:00:00Z") == 1714564800.0
    assert parse_time("2024-05-01T12:00:00") == 1714564800.0  # no zone: UTC
    assert parse_time("2024-05-01T14:00:00+02:00") == 1714564800.0
    with pytest.raises(Exception, match="ISO 8601"):
        parse_time("yesterday", "--after")


@pytest.fixture(scope="module")
def run_features(finished_run, tiny_world):
    """(query features, gallery records, gallery features, metric) of the tiny finished run, embedded as
    `vreid eval` embeds them (extract_features with the model's preprocessing)."""
    from vreid.config import load_experiment
    from vreid.data import load_dataset
    from vreid.engine.bundle import load_bundle
    from vreid.engine.extract import extract_features
    from vreid.engine.preprocessing import model_preprocessing

    run, _ = finished_run
    cfg = load_experiment(str(run / "config.yaml"), [f"output_dir={run}"])
    method = load_bundle(run)
    cfg, _ = model_preprocessing(cfg, method.info)
    data = load_dataset(cfg.data)
    qf = extract_features(method, data.query, cfg.data, flip=cfg.eval.flip).numpy()
    gf = extract_features(method, data.gallery, cfg.data, flip=cfg.eval.flip).numpy()
    return qf, data.gallery, gf, cfg.eval.metric


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_store_ranks_a_run_gallery_as_eval(engine, metric, run_features, tmp_path, one_thread):
    from vreid.eval import ranked_topk
    from vreid.gallery.search import record_items

    qf, gallery, gf, _ = run_features
    with create_store(store_uri(engine, tmp_path), StoreInfo(gf.shape[1], metric)) as store:
        ids = store.add(gf, record_items(gallery))
        got = store.search(qf, 10)
    want_idx, want_dist = ranked_topk(qf, gf, k=10, metric=metric)
    position = {i: p for p, i in enumerate(ids)}
    for hits, idx, dist in zip(got, want_idx, want_dist):
        np.testing.assert_allclose([h.distance for h in hits], dist, atol=2e-3)  # sqrt of a tiny square
        untied = np.r_[np.diff(dist) > 1e-5, True] & np.r_[True, np.diff(dist) > 1e-5]
        assert np.array_equal(np.array([position[h.id] for h in hits])[untied], idx[untied])


def test_rerank_reorders_the_candidates(run_features, tmp_path, one_thread):
    from vreid.gallery.search import record_items
    from vreid.rerank import RERANKERS

    qf, gallery, gf, metric = run_features
    with create_store(str(tmp_path / "s"), StoreInfo(gf.shape[1], metric)) as store:
        ids = store.add(gf, record_items(gallery))
        plain = search_store(store, qf[:2], 5)
        reranked = search_store(store, qf[:2], 5, rerank="kreciprocal")
    assert [len(r) for r in reranked] == [5, 5]
    # with every gallery item a candidate (54 < 100), the store's re-ranking is re-ranking the whole gallery
    d = RERANKERS.get("kreciprocal")(qf[:2], gf, metric=metric).block(0, 2).numpy()
    position = {i: p for p, i in enumerate(ids)}
    for r, hits in enumerate(reranked):
        np.testing.assert_allclose([h.distance for h in hits], np.sort(d[r])[:5], atol=1e-4)
        assert sorted(position[h.id] for h in hits) == sorted(np.argsort(d[r], kind="stable")[:5].tolist())
    assert plain != reranked


def test_folder_store_sees_what_another_handle_committed(tmp_path):
    """Each search of a folder store reloads what another process (here: another handle) added or deleted."""
    x, items = world(60)
    uri = store_uri("faiss", tmp_path)
    with create_store(uri, StoreInfo(x.shape[1])) as writer, open_store(uri) as reader:
        ids = writer.add(x[:30], items[:30])
        assert len(reader.search(x[:1], 100)[0]) == 30
        more = reader.add(x[30:], items[30:])  # the reader writes too; the writer's view is stale until it looks
        assert [h.id for h in writer.search(x[45:46], 1)[0]] == [more[15]]
        writer.delete(ids[:10])
        assert len(reader.search(x[:1], 100)[0]) == 50 and len(reader) == 50
