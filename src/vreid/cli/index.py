"""`vreid index build | add | delete | stats`: a searchable gallery store of a trained model's embeddings."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from vreid.cli.common import console

STORE_HELP = ("Gallery store: a folder (faiss + SQLite, the default), milvus://FILE.db (milvus-lite) or "
              "milvus://HOST:PORT / http://HOST:PORT (a Milvus server)")


def rank_device(device: str) -> str:
    """`auto` -> this process's GPU (its LOCAL_RANK under torchrun) if there is one, else the CPU."""
    if device != "auto":
        return device
    import os

    import torch

    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"


def make_embedder(checkpoint: str, device: str = "auto") -> Any:
    """The embedder of a run folder (or an ONNX export), ranking as `vreid eval` ranks that model."""
    from vreid.gallery.embedders import load_embedder

    if str(checkpoint).endswith(".onnx"):
        return load_embedder(checkpoint)
    return load_embedder(checkpoint, device=rank_device(device))


def store_info_of(embedder: Any, checkpoint: str) -> Any:
    from vreid.gallery.base import StoreInfo

    model = dict(getattr(embedder, "model", {}) or {})
    model.setdefault("run", str(Path(checkpoint).resolve()))
    model["checkpoint"] = str(Path(checkpoint).resolve())  # what `index add` and `search` embed with
    return StoreInfo(dim=int(embedder.dim), metric=str(embedder.metric), model=model)


def stored_checkpoint(info: Any, store: str) -> str:
    """The run folder or .onnx file a store was built with (its StoreInfo.model)."""
    from vreid.gallery.search import SearchError

    found = info.model.get("checkpoint") or info.model.get("run")
    if not found:
        raise SearchError(f"{store}: the store does not name its model; pass --checkpoint RUN")
    return str(found)


def check_checkpoint(checkpoint: str) -> None:
    """A missing or foreign --checkpoint fails before anything is read or written."""
    if str(checkpoint).endswith(".onnx"):
        if not Path(checkpoint).is_file():
            from vreid.gallery.search import SearchError

            raise SearchError(f"--checkpoint {checkpoint}: no such ONNX file; export one with `vreid export onnx`, "
                              "or pass a run folder")
        return
    from vreid.engine.bundle import resolve_weights

    resolve_weights(checkpoint)


def dataset_items(root: str, layout: str, split: str) -> list:
    from vreid.config import load_experiment
    from vreid.data import load_dataset
    from vreid.data.layouts import LAYOUTS
    from vreid.gallery.search import SearchError, record_items

    if layout not in LAYOUTS:
        raise SearchError(f"--layout {layout}: unknown dataset layout; use one of {', '.join(LAYOUTS.names())} "
                          "(or --images DIR for a plain folder of images)")
    cfg = load_experiment(None, [f"data.root={root}", f"data.layout={layout}"])
    dataset = load_dataset(cfg.data)
    splits = ("train", "query", "gallery") if split == "all" else (split,)
    records = [r for name in splits for r in getattr(dataset, name)]
    if not records:
        raise SearchError(f"--data {root}: the {split} split of this {layout} dataset is empty; pick another "
                          "--split")
    return record_items(records)


def embed_sharded(embedder: Any, items: list, batch_size: int):
    """Embeddings of all items: under torchrun each rank embeds its share and rank 0 gets them all, in order
    (the other ranks get None)."""
    import numpy as np
    import torch

    from vreid.engine.distributed import all_gather_uneven, current_dist, init_distributed
    from vreid.gallery.search import embed_items, merge_shards, shard_slice

    info = init_distributed("cpu") if not current_dist().enabled else current_dist()
    if not info.enabled:
        return embed_items(embedder, items, batch_size)
    share = embed_items(embedder, items[shard_slice(len(items), info.world_size, info.rank)], batch_size)
    parts = all_gather_uneven(torch.from_numpy(np.ascontiguousarray(share)), info, dst=0)
    return merge_shards([p.numpy() for p in parts], embedder.dim) if info.is_main else None


def register(app: typer.Typer) -> None:
    index_app = typer.Typer(help="Build and change a gallery store (vreid search looks it up).",
                            no_args_is_help=True)
    app.add_typer(index_app, name="index")

    @index_app.command(
        "build",
        epilog="Example: vreid index build galleries/veri --checkpoint runs/bot --data data/VeRi --layout veri776",
    )
    def build(
        store: str = typer.Argument(..., help=STORE_HELP),
        checkpoint: str = typer.Option(..., "--checkpoint", "-c", help="Run folder (or .onnx export) whose model "
                                       "embeds the images"),
        data: Optional[str] = typer.Option(None, "--data", help="Dataset root (with --layout)"),
        layout: Optional[str] = typer.Option(None, "--layout", help="veri776 | vehicleid | veriwild | folder"),
        split: str = typer.Option("gallery", "--split", help="With --data: gallery | query | train | all"),
        images: Optional[str] = typer.Option(None, "--images", help="A folder of images (instead of --data)"),
        camera: Optional[int] = typer.Option(None, "--camera", help="With --images: their camera id"),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace the store if it exists"),
        batch_size: int = typer.Option(64, "--batch-size", help="Images embedded at a time"),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    ) -> None:
        """Embed a dataset split or a folder of images and store them with path, camera, time and vehicle id.

        Under torchrun each process embeds its share and rank 0 writes the store.
        """
        from vreid.gallery.search import SearchError, file_items, list_images
        from vreid.gallery.store import StoreError, create_store, store_exists
        from vreid.launch import launched_as_main

        if (data is None) == (images is None):
            raise SearchError("give the images to index: --data ROOT --layout LAYOUT (a dataset split) or "
                              "--images DIR (a folder), not both")
        if data is not None and layout is None:
            raise SearchError(f"--data {data}: also pass --layout (veri776, vehicleid, veriwild or folder)")
        if split not in ("gallery", "query", "train", "all"):
            raise SearchError(f"--split {split}: use gallery, query, train or all")
        if store_exists(store) and not overwrite:
            raise StoreError(f"{store}: a gallery store already exists here; pass --overwrite to replace it, or "
                             f"`vreid index add {store} IMAGE_OR_DIR...` to add images to it")
        check_checkpoint(checkpoint)
        items = dataset_items(data, layout, split) if data is not None else \
            file_items(list_images([images], "--images"), camera)
        embedder = make_embedder(checkpoint, device)
        embeddings = embed_sharded(embedder, items, batch_size)
        if embeddings is None or not launched_as_main():
            return
        with create_store(store, store_info_of(embedder, checkpoint), overwrite=overwrite) as gallery:
            gallery.add(embeddings, items)
            count = len(gallery)
        console.print(f"{store}: {count} images ({embedder.metric}, width {embedder.dim})", highlight=False,
                      soft_wrap=True)

    @index_app.command("add", epilog="Example: vreid index add galleries/veri new_images/ --camera 3 "
                                     "--time 2024-05-01T12:00:00Z")
    def add(
        store: str = typer.Argument(..., help=STORE_HELP),
        paths: list[str] = typer.Argument(..., help="Image files or folders of images"),
        camera: Optional[int] = typer.Option(None, "--camera", help="Their camera id (default: unknown)"),
        when: Optional[str] = typer.Option(None, "--time", help="When they were taken: ISO 8601 or epoch seconds "
                                           "(default: each file's modification time)"),
        batch_size: int = typer.Option(64, "--batch-size", help="Images embedded at a time"),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    ) -> None:
        """Embed images with the store's model and add them (all or none)."""
        from vreid.gallery.search import embed_items, file_items, list_images, parse_time
        from vreid.gallery.store import open_store

        moment = parse_time(when, "--time") if when is not None else None
        with open_store(store) as gallery:
            files = list_images(paths)
            run = stored_checkpoint(gallery.info, store)
            check_checkpoint(run)
            items = file_items(files, camera, moment)
            embedder = make_embedder(run, device)
            ids = gallery.add(embed_items(embedder, items, batch_size), items)
            count = len(gallery)
        console.print(f"{store}: added {len(ids)} images (ids {ids[0]}..{ids[-1]}), {count} in all",
                      highlight=False, soft_wrap=True)

    @index_app.command("delete", epilog="Example: vreid index delete galleries/veri 17 18 19")
    def delete(
        store: str = typer.Argument(..., help=STORE_HELP),
        ids: list[int] = typer.Argument(..., help="Ids of the items (as `vreid search` prints them)"),
    ) -> None:
        """Remove items by id (all or none); unknown ids are reported."""
        from vreid.gallery.store import open_store

        with open_store(store) as gallery:
            removed = gallery.delete(ids)
            count = len(gallery)
        missing = len(set(ids)) - removed
        console.print(f"{store}: deleted {removed} items, {count} left"
                      + (f" ({missing} ids were not in the store)" if missing else ""), highlight=False,
                      soft_wrap=True)

    @index_app.command("stats", epilog="Example: vreid index stats galleries/veri --json")
    def stats(
        store: str = typer.Argument(..., help=STORE_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print JSON"),
    ) -> None:
        """Items, width, metric, cameras, time range, disk size and the model of a store."""
        import json

        from vreid.gallery.store import open_store

        with open_store(store) as gallery:
            info = gallery.stats()
        if as_json:
            typer.echo(json.dumps(info, indent=2, default=str))
            return
        for key, value in info.items():
            typer.echo(f"{key}: {json.dumps(value, default=str) if isinstance(value, dict) else value}")
