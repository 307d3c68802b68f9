"""`vreid index build | add | delete | stats` and `vreid search`: the store of a tiny run's gallery ranks each
query as `vreid eval`'s ranked list does; filters, --json, re-ranking; bad input is one `error:` line that
changes nothing; the torchrun shards split and merge in order."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner


def vreid(*args: str):
    from vreid.cli.main import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    return result


def ok(*args: str) -> str:
    result = vreid(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def digest(folder: Path) -> dict[str, str] | None:
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(finished_run, tiny_world, tmp_path_factory):
    """(store, run, query paths in dataset order) of `vreid index build` over the tiny run's gallery split."""
    from vreid.config import load_experiment
    from vreid.data import load_dataset

    run, _ = finished_run
    store = tmp_path_factory.mktemp("index") / "gallery"
    ok("index", "build", store, "--checkpoint", run, "--data", tiny_world, "--layout", "veri776", "--device", "cpu")
    data = load_dataset(load_experiment(None, [f"data.root={tiny_world}", "data.layout=veri776"]).data)
    return store, run, [r.path for r in data.query], data


def test_search_ranks_as_the_eval_ranked_list(built, one_thread):
    store, run, queries, data = built
    ranked = np.load(run / "ranked.npz")
    out = json.loads(ok("search", store, *queries, "--top", "10", "--json", "--device", "cpu"))
    assert [q["query"] for q in out] == [str(Path(p).resolve()) for p in queries]
    gallery_paths = [r.path for r in data.gallery]
    for q, idx, dist in zip(out, ranked["indices"], ranked["distances"]):
        got = [gallery_paths.index(h["path"]) for h in q["hits"]]
        np.testing.assert_allclose([h["distance"] for h in q["hits"]], dist, atol=2e-3)
        untied = np.r_[np.diff(dist) > 1e-5, True] & np.r_[True, np.diff(dist) > 1e-5]  # ties aside
        assert np.array_equal(np.array(got)[untied], idx[untied])
        for h in q["hits"]:
            record = data.gallery[gallery_paths.index(h["path"])]
            assert (h["camera"], h["vehicle_id"], h["time"]) == (record.camera_id, record.vehicle_id,
                                                                 record.timestamp)


def test_search_filters_rerank_and_text(built, one_thread):
    store, _, queries, data = built
    camera = data.gallery[0].camera_id
    times = sorted(r.timestamp for r in data.gallery)
    after, before = times[10], times[40]
    out = json.loads(ok("search", store, queries[0], "--camera", camera, "--after", after, "--before", before,
                        "--top", "50", "--json", "--device", "cpu"))
    hits = out[0]["hits"]
    expected = {r.path for r in data.gallery if r.camera_id == camera and after <= r.timestamp <= before}
    assert {h["path"] for h in hits} == expected and hits
    reranked = json.loads(ok("search", store, queries[0], "--rerank", "kreciprocal", "--top", "5", "--json",
                             "--device", "cpu"))[0]["hits"]
    assert [h["rank"] for h in reranked] == [1, 2, 3, 4, 5]
    text = ok("search", store, queries[0], "--top", "3", "--device", "cpu")
    lines = text.splitlines()
    assert lines[0] == f"query {Path(queries[0]).resolve()}" and len(lines) == 4
    assert "cam" in lines[1] and "id " in lines[1] and "Z" in lines[1]  # time in ISO 8601, UTC
    none = ok("search", store, queries[0], "--camera", 999, "--device", "cpu")
    assert "no gallery item passes the filters" in none


def test_images_build_add_delete_stats(finished_run, tiny_world, tmp_path, one_thread):
    run, _ = finished_run
    folder = tmp_path / "cam7"
    folder.mkdir()
    for p in sorted((tiny_world / "image_test").glob("*.jpg"))[:4]:
        shutil.copy(p, folder / p.name)
    store = tmp_path / "loose"
    ok("index", "build", store, "-c", run, "--images", folder, "--camera", 7, "--device", "cpu")
    stats = json.loads(ok("index", "stats", store, "--json"))
    assert stats["items"] == 4 and stats["cameras"] == 1 and stats["model"]["run"] == str(run.resolve())
    extra = sorted((tiny_world / "image_query").glob("*.jpg"))[:2]
    added = ok("index", "add", store, *extra, "--camera", 8, "--time", "2024-05-01T12:00:00Z", "--device", "cpu")
    assert "added 2 images" in added and "6 in all" in added
    out = json.loads(ok("search", store, extra[0], "--camera", 8, "--after", 1714564800, "--before",
                        "2024-05-01T12:00:00Z", "--json", "--device", "cpu"))
    hits = out[0]["hits"]
    assert [h["camera"] for h in hits] == [8, 8] and hits[0]["path"] == str(extra[0].resolve())
    assert hits[0]["distance"] < 1e-3 and hits[0]["time"] == 1714564800.0
    loose = json.loads(ok("search", store, extra[0], "--camera", 7, "--json", "--device", "cpu"))[0]["hits"]
    mtimes = {str((folder / Path(h["path"]).name).resolve()): (folder / Path(h["path"]).name).stat().st_mtime
              for h in loose}
    assert all(h["time"] == mtimes[h["path"]] and h["vehicle_id"] is None for h in loose)  # the file's mtime
    deleted = ok("index", "delete", store, hits[0]["id"], 123456)
    assert "deleted 1 items, 5 left" in deleted and "1 ids were not in the store" in deleted
    text = ok("index", "stats", store)
    assert "items: 5" in text and "engine: faiss+sqlite" in text


def test_milvus_lite_store_through_the_cli(built, finished_run, tiny_world, tmp_path, one_thread):
    store, run, queries, _ = built
    uri = f"milvus://{tmp_path}/gallery.db"
    ok("index", "build", uri, "-c", run, "--data", tiny_world, "--layout", "veri776", "--device", "cpu")
    assert json.loads(ok("index", "stats", uri, "--json"))["items"] == 54
    a = json.loads(ok("search", uri, *queries[:3], "--top", "8", "--json", "--device", "cpu"))
    b = json.loads(ok("search", store, *queries[:3], "--top", "8", "--json", "--device", "cpu"))
    for qa, qb in zip(a, b):
        np.testing.assert_allclose([h["distance"] for h in qa["hits"]], [h["distance"] for h in qb["hits"]],
                                   atol=1e-4)
        assert [h["path"] for h in qa["hits"]][:3] == [h["path"] for h in qb["hits"]][:3]


def one_error(result) -> str:
    assert result.exit_code not in (0, None), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


def test_bad_input_is_one_error_line_and_changes_nothing(built, finished_run, tiny_world, tmp_path):
    store, run, queries, _ = built
    empty = tmp_path / "empty"
    empty.mkdir()
    new = tmp_path / "new"
    before = digest(store)
    cases = [
        (["index", "build", new, "-c", tmp_path / "norun", "--images", tiny_world / "image_test"],
         ("norun", "vreid train"), new),
        (["index", "build", store, "-c", run, "--images", tiny_world / "image_test"], ("--overwrite",), store),
        (["index", "build", new, "-c", run, "--data", tiny_world, "--layout", "veri777"],
         ("--layout veri777", "veri776"), new),
        (["index", "build", new, "-c", run, "--images", empty], ("no images", str(empty)), new),
        (["index", "build", new, "-c", run], ("--data", "--images"), new),
        (["index", "add", tmp_path / "nostore", queries[0]], ("no gallery store", "vreid index build"),
         tmp_path / "nostore"),
        (["index", "add", store, queries[0], "--time", "noon"], ("--time", "ISO 8601"), store),
        (["index", "add", store, tmp_path / "missing.jpg"], ("missing.jpg", "no such file"), store),
        (["search", store, queries[0], "--after", "tomorrow"], ("--after", "ISO 8601"), store),
        (["search", store, queries[0], "--rerank", "kreciprocl"], ("--rerank", "kreciprocal"), store),
        (["search", store, queries[0], "--after", "2024-05-02", "--before", "2024-05-01"], ("later than",), store),
        (["search", "ftp://x/y", queries[0]], ("no gallery store engine",), store),
    ]
    for args, expect, folder in cases:
        was = digest(folder)
        line = one_error(vreid(*args))
        for text in expect:
            assert text in line, (args, line)
        assert digest(folder) == was, args
    assert digest(store) == before


def test_overwrite_replaces_a_store(finished_run, tiny_world, tmp_path, one_thread):
    run, _ = finished_run
    store = tmp_path / "g"
    images = tmp_path / "imgs"
    images.mkdir()
    for p in sorted((tiny_world / "image_test").glob("*.jpg"))[:3]:
        shutil.copy(p, images / p.name)
    ok("index", "build", store, "-c", run, "--images", images, "--device", "cpu")
    ok("index", "build", store, "-c", run, "--data", tiny_world, "--layout", "veri776", "--split", "query",
       "--overwrite", "--device", "cpu")
    assert json.loads(ok("index", "stats", store, "--json"))["items"] == 16


@pytest.mark.parametrize("count", [0, 1, 5, 54])
@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
def test_torchrun_shards_split_and_merge_in_order(count, world_size):
    from vreid.gallery.search import merge_shards, shard_slice

    rows = np.arange(count * 2, dtype=np.float32).reshape(count, 2)
    slices = [shard_slice(count, world_size, rank) for rank in range(world_size)]
    assert [i for s in slices for i in range(count)[s]] == list(range(count))  # each item once, in order
    merged = merge_shards([rows[s] for s in slices], 2)
    assert np.array_equal(merged, rows)


def test_commands_are_listed_and_the_cli_stays_torch_free():
    import subprocess
    import sys

    code = ("import sys; import vreid.cli.index, vreid.cli.search; "
            "print(sorted(m for m in ('torch', 'faiss', 'pymilvus') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr
    assert "index" in ok("--help") and "search" in ok("--help")
    assert "build" in ok("index", "--help")


def test_torchrun_build_equals_one_process(built, finished_run, tiny_world, tmp_path):
    """Two gloo processes each embed their share; rank 0 writes a store equal to the one-process build."""
    import os
    import subprocess
    import sys

    from vreid.gallery.store import open_store

    store, run, _, _ = built
    sharded = tmp_path / "sharded"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "vreid.cli.main", "index", "build", str(sharded), "-c", str(run), "--data", str(tiny_world), "--layout",
           "veri776", "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("54 images") == 1  # rank 0 reports, once
    with open_store(str(store)) as one, open_store(str(sharded)) as two:
        ids = list(range(1, len(one) + 1))
        assert len(two) == len(one) == 54
        assert one.items(ids) == two.items(ids)
        np.testing.assert_allclose(two.vectors(ids), one.vectors(ids), atol=1e-5)


def test_an_onnx_export_builds_and_searches_the_same_store(built, finished_run, tiny_world, tmp_path, one_thread):
    store, run, queries, _ = built
    model = tmp_path / "model.onnx"
    ok("export", "onnx", run, "-o", model)
    onnx_store = tmp_path / "onnx"
    ok("index", "build", onnx_store, "-c", model, "--data", tiny_world, "--layout", "veri776")
    assert json.loads(ok("index", "stats", onnx_store, "--json"))["model"]["checkpoint"] == str(model.resolve())
    a = json.loads(ok("search", onnx_store, *queries[:4], "--top", "5", "--json"))  # embedded by the .onnx file
    b = json.loads(ok("search", store, *queries[:4], "--top", "5", "--json", "--device", "cpu"))
    for qa, qb in zip(a, b):
        np.testing.assert_allclose([h["distance"] for h in qa["hits"]], [h["distance"] for h in qb["hits"]],
                                   atol=1e-4)
