"""`vreid serve`'s HTTP API (vreid.serve.app) through FastAPI's TestClient: search, add, delete, health, stats,
refusals (malformed, oversized, unauthenticated) with a JSON message, concurrency, and ranking parity with the
store's own search. FakeStore / MeanColourEmbedder are small stand-ins the browser test shares."""
from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastapi.testclient import TestClient

from vreid.data.images import open_rgb
from vreid.errors import VreidError
from vreid.gallery.base import GalleryItem, Hit, StoreInfo
from vreid.serve.app import create_app
from vreid.serve.uploads import RequestError, read_limited


class FakeStore:
    """Brute-force numpy GalleryStore (euclidean). Not thread-safe on purpose: the service must lock it."""

    def __init__(self, dim: int = 3) -> None:
        self.info = StoreInfo(dim=dim, metric="euclidean", model={"fake": "mean colour"})
        self.vectors = np.zeros((0, dim), np.float32)
        self.ids: list[int] = []
        self.by_id: dict[int, GalleryItem] = {}
        self.next_id = 1

    def add(self, embeddings, items):
        new = list(range(self.next_id, self.next_id + len(items)))
        self.next_id += len(items)
        self.vectors = np.concatenate([self.vectors, np.asarray(embeddings, np.float32)])
        time.sleep(0.002)  # widens the window in which an unlocked reader sees vectors and ids disagree
        self.ids = self.ids + new
        self.by_id.update(zip(new, items))
        return new

    def delete(self, ids):
        gone = {i for i in ids if i in self.by_id}
        keep = [k for k, i in enumerate(self.ids) if i not in gone]
        self.vectors, self.ids = self.vectors[keep], [self.ids[k] for k in keep]
        for i in gone:
            del self.by_id[i]
        return len(gone)

    def search(self, queries, top_k=10, cameras=None, after=None, before=None):
        ids, vectors = list(self.ids), self.vectors  # one snapshot
        assert len(ids) == len(vectors), "store read while it was being written"
        keep = [k for k, i in enumerate(ids) if self._passes(self.by_id[i], cameras, after, before)]
        out = []
        for q in np.asarray(queries, np.float32):
            d = np.sqrt(((vectors[keep] - q) ** 2).sum(1))
            order = np.argsort(d, kind="stable")[:top_k]
            out.append([Hit(ids[keep[k]], float(d[k]), self.by_id[ids[keep[k]]]) for k in order])
        return out

    @staticmethod
    def _passes(item, cameras, after, before) -> bool:
        if cameras is not None and item.camera not in cameras:
            return False
        if after is not None and (item.time is None or item.time < after):
            return False
        return not (before is not None and (item.time is None or item.time > before))

    def __len__(self):
        return len(self.ids)

    def stats(self):
        return {"items": len(self), "engine": "fake"}

    def close(self):
        pass


class MeanColourEmbedder:
    """The mean RGB of an image's centre half (where the vehicle is): it tells most of the tiny world's vehicles
    apart (they differ in colour), among them those of the first four queries (the world is seeded)."""

    dim, metric, model = 3, "euclidean", {"fake": "mean colour"}

    def embed(self, images, cameras=None, viewpoints=None):
        def centre(im):
            a = np.asarray(im.convert("RGB"), np.float32)
            h, w = a.shape[:2]
            return a[h // 4: max(3 * h // 4, 1), w // 4: max(3 * w // 4, 1)].reshape(-1, 3).mean(0)
        return np.stack([centre(im) for im in images])


def world_split(root: Path, split: str) -> list[GalleryItem]:
    """The tiny world's images of one split as GalleryItems (VeRi names: VVVV_cCCC_TTTTTTTT_N.jpg). The
    gallery leaves out the query images (VeRi's test folder holds them too), so no query finds itself."""
    from vreid.data.layouts import load_layout

    dataset = load_layout("veri776", root)
    queries = {Path(r.path).name for r in dataset.query}
    records = [r for r in dataset.gallery if Path(r.path).name not in queries] if split == "gallery" else dataset.query
    return [GalleryItem(path=r.path, camera=r.camera_id, time=r.timestamp, vehicle_id=r.vehicle_id) for r in records]


def fill(store, items, embedder=None) -> None:
    embedder = embedder or MeanColourEmbedder()
    store.add(embedder.embed([open_rgb(i.path) for i in items]), items)


def png_bytes(size=(32, 32), colour=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A PNG whose header claims width x height pixels, with almost no data: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def make_store(kind: str, folder: Path):
    """An empty 3-d euclidean store: the in-test FakeStore, or vreid's folder store (faiss + SQLite)."""
    if kind == "fake":
        return FakeStore()
    from vreid.gallery.store import create_store

    return create_store(str(folder), StoreInfo(dim=3, metric="euclidean", model={"fake": "mean colour"}))


@pytest.fixture(params=["fake", "folder"])
def gallery(request, tiny_world, tmp_path):
    store = make_store(request.param, tmp_path / "store")
    fill(store, world_split(tiny_world, "gallery"))
    yield store
    store.close()


@pytest.fixture
def client(gallery, tmp_path):
    return TestClient(create_app(gallery, MeanColourEmbedder(), upload_dir=tmp_path / "uploads"))


def upload(path_or_bytes, name="q.jpg"):
    data = Path(path_or_bytes).read_bytes() if not isinstance(path_or_bytes, bytes) else path_or_bytes
    return {"image": (name, data, "application/octet-stream")}


def test_health_and_stats(client, gallery):
    assert client.get("/api/health").json() == {"status": "ok"}
    stats = client.get("/api/stats").json()
    assert stats["items"] == len(gallery) and stats["dim"] == 3 and stats["metric"] == "euclidean"
    assert stats["store"]["items"] == len(gallery) and stats["service"]["can_add"] is True


def test_search_ranks_the_query_vehicle_first_and_matches_the_store(client, gallery, tiny_world):
    for query in world_split(tiny_world, "query")[:4]:
        r = client.post("/api/search", params={"top": 5}, files=upload(query.path))
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert results[0]["vehicle_id"] == query.vehicle_id
        expected = gallery.search(MeanColourEmbedder().embed([open_rgb(query.path)]), top_k=5)[0]
        assert [h["id"] for h in results] == [h.id for h in expected]
        assert [h["distance"] for h in results] == pytest.approx([h.distance for h in expected])
        assert [h["rank"] for h in results] == [1, 2, 3, 4, 5]


def test_search_filters_by_camera_and_time(client, tiny_world):
    query = world_split(tiny_world, "query")[0]
    only = client.post("/api/search", params={"top": 50, "cameras": "1,3"}, files=upload(query.path)).json()
    assert only["results"] and {h["camera"] for h in only["results"]} <= {1, 3}
    times = sorted(i.time for i in world_split(tiny_world, "gallery"))
    lo, hi = times[5], times[20]
    window = client.post("/api/search", params={"top": 50, "after": lo, "before": hi}, files=upload(query.path))
    got = [h["time"] for h in window.json()["results"]]
    assert len(got) == 16 and all(lo <= t <= hi for t in got)
    iso = client.post("/api/search", params={"top": 50, "after": "1970-01-01T00:00:00Z",
                                             "before": window.json()["results"][0]["time_iso"]},
                      files=upload(query.path))
    assert iso.status_code == 200 and iso.json()["results"]


def test_add_then_search_finds_it_then_delete(client, gallery):
    before = len(gallery)
    data = png_bytes(colour=(3, 250, 7))
    r = client.post("/api/gallery", params={"camera": 9, "time": "2024-05-01T08:30:00Z"}, files=upload(data))
    assert r.status_code == 200, r.text
    added = r.json()
    assert added["camera"] == 9 and added["time_iso"] == "2024-05-01T08:30:00Z" and len(gallery) == before + 1
    hits = client.post("/api/search", params={"top": 1}, files=upload(data)).json()["results"]
    assert hits[0]["id"] == added["id"] and hits[0]["distance"] == pytest.approx(0.0)
    assert client.get(added["image"]).content == data
    assert client.delete(f"/api/gallery/{added['id']}").json() == {"deleted": added["id"]}
    assert len(gallery) == before
    for r in (client.delete(f"/api/gallery/{added['id']}"), client.get(added["image"])):
        assert r.status_code == 404 and "error" in r.json()


def test_images_are_served_only_by_gallery_id(client, tiny_world):
    query = world_split(tiny_world, "query")[0]
    hit = client.post("/api/search", params={"top": 1}, files=upload(query.path)).json()["results"][0]
    assert client.get(hit["image"]).content == Path(world_split(tiny_world, "gallery")[0].path).parent.joinpath(
        hit["name"]).read_bytes()
    for bad in ("/api/images/123456", "/api/images/..%2F..%2Fetc%2Fpasswd", "/static/..%2F..%2Fapp.py"):
        r = client.get(bad)
        assert 400 <= r.status_code < 500 and "error" in r.json(), bad


@pytest.mark.parametrize("request_kw, status, words", [
    ({"files": upload(b"this is not an image")}, 400, "not an image"),
    ({"files": upload(b"")}, 400, "empty"),
    ({"data": {"x": "1"}}, 422, "form field 'image'"),
    ({"files": upload(png_bytes()), "params": {"top": 0}}, 400, "top=0"),
    ({"files": upload(png_bytes()), "params": {"top": "many"}}, 422, "top"),
    ({"files": upload(png_bytes()), "params": {"cameras": "north"}}, 400, "camera ids"),
    ({"files": upload(png_bytes()), "params": {"after": "yesterday"}}, 400, "not a time"),
    ({"files": upload(png_bytes()), "params": {"after": 10, "before": 5}}, 400, "later than"),
])
def test_malformed_requests_get_a_4xx_message(client, request_kw, status, words):
    r = client.post("/api/search", **request_kw)
    assert r.status_code == status and words in r.json()["error"], r.text


def test_oversized_uploads_are_refused(gallery, tmp_path):
    small = TestClient(create_app(gallery, MeanColourEmbedder(), max_upload_bytes=2000, max_image_pixels=32 * 32))
    noise = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    big = io.BytesIO()
    Image.fromarray(noise).save(big, format="PNG")
    r = small.post("/api/search", files=upload(big.getvalue()))
    assert r.status_code == 413 and "2000 bytes" in r.json()["error"]
    r = small.post("/api/search", files=upload(png_bytes(size=(33, 32))))
    assert r.status_code == 413 and "33 x 32" in r.json()["error"]
    assert small.post("/api/search", files=upload(png_bytes(size=(32, 32)))).status_code == 200
    with pytest.raises(RequestError, match="2000 bytes"):
        read_limited(io.BytesIO(b"x" * 2001), 2000)

    def chunked():  # no Content-Length: the body is counted as it arrives
        yield b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"q.png\"\r\n\r\n"
        for _ in range(200):
            yield b"x" * 1024
    r = small.post("/api/search", content=chunked(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and "more than" in r.json()["error"], r.text
    r = small.post("/api/search", content=b"x", headers={"content-length": "many"})
    assert r.status_code == 400


def test_decompression_bomb_is_refused_before_decoding(client):
    r = client.post("/api/search", files=upload(bomb_png()))
    assert r.status_code == 413 and "pixels" in r.json()["error"], r.text


def test_token_is_required_from_header_cookie_or_query(gallery):
    guarded = TestClient(create_app(gallery, MeanColourEmbedder(), token="s3cret"))
    assert guarded.get("/api/health").status_code == 200
    for r in (guarded.get("/api/stats"), guarded.post("/api/search", files=upload(png_bytes()))):
        assert r.status_code == 401 and "token" in r.json()["error"]
    wrong = guarded.get("/api/stats", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "wrong token" in wrong.json()["error"]
    assert guarded.get("/api/stats", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert guarded.get("/api/stats", params={"token": "s3cret"}).status_code == 200
    page = guarded.get("/", params={"token": "s3cret"}, follow_redirects=False)
    assert page.status_code == 303 and "vreid_token" in page.headers["set-cookie"]
    assert "httponly" in page.headers["set-cookie"].lower()
    guarded.cookies.set("vreid_token", "s3cret")
    assert guarded.get("/api/stats").status_code == 200


def test_adding_without_an_upload_folder_is_refused(gallery):
    r = TestClient(create_app(gallery, MeanColourEmbedder())).post("/api/gallery", files=upload(png_bytes()))
    assert r.status_code == 403 and "--uploads" in r.json()["error"]


def test_embedder_and_store_widths_must_agree():
    with pytest.raises(VreidError, match="4-d embeddings but the store holds 3-d"):
        create_app(FakeStore(dim=3), type("E", (MeanColourEmbedder,), {"dim": 4})())


def test_searches_while_adding_from_threads(client, gallery, tiny_world):
    queries = world_split(tiny_world, "query")[:4]
    start = len(gallery)
    errors: list[str] = []

    def searcher(k: int) -> None:
        for j in range(15):
            q = queries[(k + j) % len(queries)]
            try:
                r = client.post("/api/search", params={"top": 5}, files=upload(q.path))
            except Exception as e:  # noqa: BLE001 - the TestClient re-raises server errors in this thread
                errors.append(repr(e))
                continue
            if r.status_code != 200:
                errors.append(r.text)
                continue
            d = [h["distance"] for h in r.json()["results"]]
            if d != sorted(d) or r.json()["results"][0]["vehicle_id"] != q.vehicle_id:
                errors.append(f"bad ranking for {q.path}: {r.json()}")

    def adder() -> None:
        for j in range(30):
            r = client.post("/api/gallery", params={"camera": 7}, files=upload(png_bytes(colour=(j, 0, 255))))
            if r.status_code != 200:
                errors.append(r.text)

    threads = [threading.Thread(target=searcher, args=(k,)) for k in range(4)] + [threading.Thread(target=adder)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(gallery) == start + 30


def test_page_and_static_files_load_nothing_from_outside(client):
    page = client.get("/")
    assert page.status_code == 200 and "vreid gallery search" in page.text
    for name in ("app.js", "style.css"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200
    static = Path(__import__("vreid.serve.app", fromlist=["STATIC"]).STATIC)
    for f in static.iterdir():
        text = f.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, f.name


def test_service_ranks_as_vreid_search(finished_run, tiny_world, tmp_path):
    """The gallery `make demo` says to serve (its printed commands, run here on a tiny run and world): the app of
    `vreid serve` (build_service: the store's recorded model, embedded as `vreid search` embeds) ranks every
    query exactly as `vreid search --json` does."""
    import json
    import shlex

    from typer.testing import CliRunner

    from vreid.cli.main import app as cli
    from vreid.cli.serve import build_service
    from vreid.demo import serve_command

    run, _ = finished_run
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "bot").symlink_to(run, target_is_directory=True)
    (demo / "data").symlink_to(tiny_world, target_is_directory=True)
    index_cmd, serve_cmd = (shlex.split(part) for part in serve_command(demo, "veri776").split("&&"))
    assert index_cmd[:3] == ["vreid", "index", "build"] and serve_cmd[:2] == ["vreid", "serve"]
    runner = CliRunner()
    built = runner.invoke(cli, index_cmd[1:])
    assert built.exit_code == 0, built.output
    store = serve_cmd[2]
    queries = [q.path for q in world_split(tiny_world, "query")[:3]]
    searched = runner.invoke(cli, ["search", store, *queries, "--top", "8", "--camera", "1", "--camera", "2",
                                   "--json", "--device", "cpu"])
    assert searched.exit_code == 0, searched.output
    expected = json.loads(searched.stdout)
    web, gallery = build_service(store, device="cpu", uploads=str(tmp_path / "uploads"))
    try:
        client = TestClient(web)
        for query, want in zip(queries, expected):
            assert want["hits"]
            got = client.post("/api/search", params={"top": 8, "cameras": "1,2"}, files=upload(query)).json()
            assert [h["id"] for h in got["results"]] == [h["id"] for h in want["hits"]]
            assert [h["distance"] for h in got["results"]] == pytest.approx([h["distance"] for h in want["hits"]],
                                                                           abs=1e-5)
        assert client.get("/api/stats").json()["items"] == len(gallery)
    finally:
        gallery.close()
    served_by_the_command(store, queries[0], expected[0]["hits"], tmp_path)


def served_by_the_command(store: str, query: str, want: list[dict], tmp_path: Path) -> None:
    """`vreid serve STORE --port P --token T` in a subprocess answers on loopback as the app did."""
    import os
    import socket
    import subprocess
    import sys
    import time as clock

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "VREID_SERVE_TOKEN": "t0k", "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "vreid", "serve", store, "--port", str(port), "--device", "cpu",
                             "--uploads", str(tmp_path / "cmd-uploads")], stdout=log, stderr=subprocess.STDOUT,
                            env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                clock.sleep(0.1)
        else:
            pytest.fail(f"vreid serve did not answer in 60 s: {(tmp_path / 'serve.log').read_text()}")
        assert httpx.get(f"{base}/api/stats").status_code == 401
        got = httpx.post(f"{base}/api/search", params={"top": 8, "cameras": "1,2"}, files=upload(query),
                         headers={"Authorization": "Bearer t0k"}).json()["results"]
        assert [h["id"] for h in got] == [h["id"] for h in want]
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
    assert "serving" in (tmp_path / "serve.log").read_text()
