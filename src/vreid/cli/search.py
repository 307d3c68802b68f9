"""`vreid search STORE IMAGE...`: the ranked gallery of each query image, from a store `vreid index build` made."""
from __future__ import annotations

from typing import Optional

import typer

from vreid.cli.index import STORE_HELP
from vreid.cli.jobs import RERANK_NAMES


def register(app: typer.Typer) -> None:
    @app.command(
        "search",
        epilog="Example: vreid search galleries/veri query.jpg --top 5 --camera 2 --camera 5 "
               "--after 2024-05-01T00:00:00Z --json",
    )
    def search(
        store: str = typer.Argument(..., help=STORE_HELP),
        images: list[str] = typer.Argument(..., help="Query images (files or folders)"),
        top: int = typer.Option(10, "--top", help="Gallery items per query"),
        cameras: Optional[list[int]] = typer.Option(None, "--camera", help="Only these cameras (repeat the option)"),
        after: Optional[str] = typer.Option(None, "--after", help="Only items taken at or after: ISO 8601 or "
                                            "epoch seconds"),
        before: Optional[str] = typer.Option(None, "--before", help="Only items taken at or before"),
        rerank: str = typer.Option("none", "--rerank", help="Re-rank the top candidates: " + " | ".join(RERANK_NAMES)),
        checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c", help="Embed the queries with this run "
                                                 "or .onnx export (default: the store's model)"),
        as_json: bool = typer.Option(False, "--json", help="Print JSON (for scripts)"),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    ) -> None:
        """Print, per query, the nearest gallery items: rank, distance, camera, time, path, id."""
        import json

        from vreid.cli.index import check_checkpoint, make_embedder, stored_checkpoint
        from vreid.gallery.search import (
            SearchError, embed_items, file_items, format_time, hits_json, list_images, parse_time, search_store,
        )
        from vreid.gallery.store import check_embedder, open_store

        if rerank not in RERANK_NAMES:
            raise SearchError(f"--rerank {rerank}: unknown re-ranker; use one of {', '.join(RERANK_NAMES)}")
        if top < 1:
            raise SearchError(f"--top {top}: give a positive number of results per query")
        start = parse_time(after, "--after") if after is not None else None
        stop = parse_time(before, "--before") if before is not None else None
        queries = list_images(images, "IMAGE")
        with open_store(store) as gallery:
            run = checkpoint or stored_checkpoint(gallery.info, store)
            check_checkpoint(run)
            embedder = make_embedder(run, device)
            check_embedder(gallery.info, embedder.dim, embedder.metric, f"--checkpoint {run}",
                           f"use the model {store} was built with")
            items = file_items(queries)
            results = search_store(gallery, embed_items(embedder, items), top, rerank, cameras or None, start, stop)
        if as_json:
            typer.echo(json.dumps([{"query": it.path, "hits": hits_json(hits)} for it, hits in zip(items, results)],
                                  indent=2))
            return
        for it, hits in zip(items, results):
            typer.echo(f"query {it.path}")
            if not hits:
                typer.echo("  (no gallery item passes the filters)")
            for row in hits_json(hits):
                camera = "-" if row["camera"] is None else row["camera"]
                typer.echo(f"  {row['rank']:>3}  {row['distance']:.4f}  cam {camera!s:>4}  "
                           f"{format_time(row['time']):<20}  {row['path']}  id {row['id']}")
