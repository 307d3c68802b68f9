"""The web page of `vreid serve` in a real browser: the system Chromium (Debian package `chromium`, which
.ci/run installs), driven by Playwright against a server on a free loopback port. Upload a query, see its vehicle
ranked first, filter by camera, click a result to search from it; a screenshot is saved (pytest's tmp dir, and
$VREID_SCREENSHOT_DIR when set)."""
from __future__ import annotations

import os
import shutil
import socket
import threading
from pathlib import Path

import pytest
from playwright import sync_api

from test_serve_api import MeanColourEmbedder, fill, make_store, world_split

TOKEN = "browser-test-token"
#: Where the browser may be: $VREID_CHROMIUM first, then the Debian/Ubuntu names.
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str:
    explicit = os.environ.get("VREID_CHROMIUM")
    if explicit:
        if not Path(explicit).is_file():
            pytest.fail(f"VREID_CHROMIUM={explicit} is not a file; point it at a Chromium executable")
        return explicit
    for name in CANDIDATES:
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file() else None)
        if found:
            return found
    pytest.fail("no Chromium found for the browser test (looked for $VREID_CHROMIUM, then "
                f"{', '.join(CANDIDATES)} on PATH): install the system package with "
                "`apt-get update && apt-get install -y chromium` (.ci/run does this), or set VREID_CHROMIUM")


@pytest.fixture
def server(tiny_world, tmp_path):
    """(base URL, store): the app over the tiny world's gallery in a folder store (faiss + SQLite), queries
    embedded by their mean colour, served by uvicorn in a thread."""
    import uvicorn

    from vreid.serve.app import create_app

    store = make_store("folder", tmp_path / "store")
    fill(store, world_split(tiny_world, "gallery"))
    app = create_app(store, MeanColourEmbedder(), token=TOKEN, upload_dir=tmp_path / "uploads")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            thread.join(0.05)
        assert server.started, "uvicorn did not start within 10 s"
        yield f"http://127.0.0.1:{port}", store
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        store.close()


def screenshot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name), full_page=True)
    extra = os.environ.get("VREID_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(extra) / name), full_page=True)


def cards(page) -> list[dict]:
    """Each result card: its id, file name, camera, and whether its image loaded."""
    return page.eval_on_selector_all(".hit", """els => els.map(el => {
        const cell = (name) => [...el.querySelectorAll('dt')].find(dt => dt.textContent === name)
                                  .nextElementSibling.textContent;
        const img = el.querySelector('img');
        return {id: el.dataset.id, file: cell('file'), camera: cell('camera'), distance: Number(cell('distance')),
                loaded: img.complete && img.naturalWidth > 0};
    })""")


def wait_for_search(page, count: int) -> None:
    page.wait_for_function(f"Number(document.body.dataset.searched || 0) >= {count}", timeout=20_000)


def test_page_ranks_the_query_vehicle_first(server, tiny_world, tmp_path):
    base, _ = server
    query = world_split(tiny_world, "query")[3]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.goto(f"{base}/?token={TOKEN}")  # sets the cookie the API calls and <img> tags carry
            assert page.url == f"{base}/"
            page.wait_for_function("document.getElementById('gallery-info').textContent.includes('gallery images')")
            page.set_input_files("#file", query.path)
            wait_for_search(page, 1)
            page.wait_for_function("[...document.querySelectorAll('.hit img')].every(i => i.complete)")
            first = cards(page)
            assert len(first) == 20
            assert first[0]["file"].startswith(f"{query.vehicle_id:04d}_"), first[0]
            assert all(c["loaded"] for c in first), "gallery images did not load through the token cookie"
            assert [c["distance"] for c in first] == sorted(c["distance"] for c in first)
            screenshot(page, tmp_path, "serve_page.png")

            page.fill("#cameras", "2")
            page.click("#search")
            wait_for_search(page, 2)
            assert {c["camera"] for c in cards(page)} == {"2"}

            page.fill("#cameras", "")
            target = cards(page)[1]
            page.click(f".hit[data-id='{target['id']}']")
            wait_for_search(page, 3)
            again = cards(page)
            assert again[0]["id"] == target["id"] and again[0]["distance"] == 0.0
            assert "results" in page.text_content("#status")
        finally:
            browser.close()
