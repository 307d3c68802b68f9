"""`vreid serve`: the search service and its web page over a gallery store (vreid.serve.app, run by uvicorn)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vreid.errors import VreidError

EXAMPLE = ("Examples:\n\n"
           "  vreid serve runs/demo/gallery            (then open http://127.0.0.1:8000/)\n\n"
           "  VREID_SERVE_TOKEN=s3cret vreid serve runs/demo/gallery --host 0.0.0.0 --port 8080\n\n"
           "  vreid serve runs/demo/gallery --checkpoint runs/demo/bot/model.onnx")

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def default_uploads(store: str) -> Path | None:
    """Images added through the service go beside a folder store (STORE-uploads); other stores need --uploads."""
    from vreid.gallery.store import uri_scheme

    if uri_scheme(store) != "file":
        return None
    folder = Path(store.removeprefix("file://"))
    return folder.parent / f"{folder.name}-uploads"


def build_service(store: str, checkpoint: str | None = None, device: str = "auto", token: str | None = None,
                  uploads: str | None = None, max_upload_mb: float = 8.0, max_pixels: int = 40_000_000):
    """(app, opened store) for `vreid serve`: the store, the embedder `vreid search` would use, the limits."""
    from vreid.cli.index import check_checkpoint, make_embedder, stored_checkpoint
    from vreid.gallery.store import open_store
    from vreid.serve.app import create_app

    gallery = open_store(store)
    try:
        model = checkpoint or stored_checkpoint(gallery.info, store)
        check_checkpoint(model)
        embedder = make_embedder(model, device)
        upload_dir = Path(uploads) if uploads else default_uploads(store)
        web = create_app(gallery, embedder, token=token, upload_dir=upload_dir,
                         max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_image_pixels=max_pixels)
    except BaseException:
        gallery.close()
        raise
    return web, gallery


def register(app: typer.Typer) -> None:
    @app.command("serve", epilog=EXAMPLE)
    def serve(
        store: str = typer.Argument(..., help="Gallery store: a folder made by `vreid index build`, or a URI"),
        host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)"),
        port: int = typer.Option(8000, min=1, max=65535, help="TCP port"),
        token: Optional[str] = typer.Option(None, envvar="VREID_SERVE_TOKEN",
                                            help="Require this bearer token (also read from $VREID_SERVE_TOKEN); "
                                                 "open the page as /?token=TOKEN"),
        checkpoint: Optional[str] = typer.Option(None, help="Run folder or ONNX file to embed queries with "
                                                            "(default: the model recorded in the store)"),
        device: str = typer.Option("auto", help="auto | cpu | cuda: where a run folder's model embeds queries"),
        uploads: Optional[str] = typer.Option(None, help="Folder for images added through the service "
                                                         "(default: STORE-uploads beside a folder store)"),
        max_upload_mb: float = typer.Option(8.0, help="Largest upload accepted, in MiB"),
        max_pixels: int = typer.Option(40_000_000, help="Largest image accepted, in pixels (width x height)"),
    ) -> None:
        """Serve a gallery store: JSON API (search by image, add, delete, stats) and a web page to search it."""
        try:
            import fastapi  # noqa: F401
            import uvicorn
        except ImportError as e:
            raise VreidError(f"the serve extra is not installed ({e.name} is missing); install it with: "
                             "pip install 'vreid[serve]'") from None

        from vreid.cli.common import console, err_console

        web, gallery = build_service(store, checkpoint, device, token, uploads, max_upload_mb, max_pixels)
        if host not in LOOPBACK and token is None:
            err_console.print(f"warning: listening on {host} without a token: anyone who can reach this port can "
                              "search, add and delete; pass --token (or set VREID_SERVE_TOKEN)", highlight=False)
        shown = f"[{host}]" if ":" in host else host
        console.print(f"serving {store} ({len(gallery)} images) at http://{shown}:{port}/"
                      + ("?token=..." if token else ""), highlight=False)
        try:
            uvicorn.run(web, host=host, port=port, log_level="warning")
        finally:
            gallery.close()
