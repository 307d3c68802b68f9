"""Find everything wrong with a dataset on disk: list files, images, splits. Used by `vreid data check` and training."""
from __future__ import annotations

import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from vreid.data.errors import Problem
from vreid.data.layouts import LAYOUTS
from vreid.data.layouts.base import Layout, ParseContext
from vreid.data.records import ReidDataset


def _readable(path: str) -> str | None:
    """None if PIL can open and verify the image, else the reason."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
        return None
    except Exception as e:  # PIL raises many types for broken files
        return f"{type(e).__name__}: {e}"


def verify_readable(paths: list[str], workers: int | None = None) -> dict[str, str]:
    """path -> reason for every image PIL cannot read. Threads: decoding headers is mostly I/O and C code."""
    workers = workers or min(32, (os.cpu_count() or 1) * 4)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        reasons = pool.map(_readable, paths, chunksize=64)
        return {p: r for p, r in zip(paths, reasons) if r is not None}


def _display(path: str, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return path


def check_images(ds: ReidDataset, ctx: ParseContext, verify_images: bool = True) -> list[Problem]:
    """Missing images (grouped by missing folder when a whole folder is gone) and, optionally, unreadable ones."""
    problems: list[Problem] = []
    paths = list(dict.fromkeys(r.path for split in (ds.train, ds.query, ds.gallery) for r in split))
    dir_exists: dict[str, bool] = {}
    missing_dirs: dict[str, list[str]] = defaultdict(list)
    present = []
    for p in paths:
        d = os.path.dirname(p)
        if d not in dir_exists:
            dir_exists[d] = os.path.isdir(d)
        if not dir_exists[d]:
            missing_dirs[d].append(p)
        elif os.path.isfile(p):
            present.append(p)
        else:
            listed_in, line = ctx.sources.get(p, ("", None))
            problems.append(Problem(file=_display(p, ctx.root), message=f"image listed in {listed_in}"
                                    f"{f' line {line}' if line else ''} is missing on disk",
                                    fix=f"restore the image or remove it from {listed_in}"))
    for d, ps in missing_dirs.items():
        listed_in, line = ctx.sources.get(ps[0], ("", None))
        problems.append(Problem(file=_display(d, ctx.root) + "/", message=f"folder is missing; {len(ps)} image(s) "
                                f"listed in {listed_in} (first at line {line}) are not on disk",
                                fix="restore the folder, or check data.root and data.layout"))
    if verify_images and present:
        for p, reason in verify_readable(present).items():
            problems.append(Problem(file=_display(p, ctx.root), message=f"image cannot be read ({reason})",
                                    fix="re-extract or re-download this image"))
    return problems


def check_splits(ds: ReidDataset, layout: Layout, ctx: ParseContext) -> list[Problem]:
    """Empty required splits, and query ids that have no image in the gallery."""
    problems = []
    required = layout.required_splits
    test_size = ds.info.get("test_size")
    for split in required:
        if not getattr(ds, split):
            problems.append(Problem(file=layout.list_file(split, test_size), message=f"{split} split is empty",
                                    fix="list its images in this file (and check data.root, data.test_size)"))
    for have, lack in (("query", "gallery"), ("gallery", "query")):
        if getattr(ds, have) and not getattr(ds, lack) and lack not in required:
            problems.append(Problem(file=layout.list_file(lack, test_size),
                                    message=f"{have} has images but {lack} is empty",
                                    fix=f"provide the {lack} split too (evaluation needs both)"))
    if ds.query and ds.gallery and ds.protocol != "vehicleid":
        gallery_ids = {r.vehicle_id for r in ds.gallery}
        absent = sorted({r.vehicle_id for r in ds.query} - gallery_ids)
        if absent:
            absent_set = set(absent)
            n_images = sum(r.vehicle_id in absent_set for r in ds.query)
            shown = ", ".join(map(str, absent[:20])) + (" ..." if len(absent) > 20 else "")
            file = ctx.sources.get(next(r.path for r in ds.query if r.vehicle_id == absent[0]), ("query list",))[0]
            problems.append(Problem(file=file, message=f"{len(absent)} query vehicle id(s) ({n_images} image(s)) "
                                    f"have no image in the gallery: {shown}",
                                    fix="add their gallery images, or drop those queries (they cannot be matched)"))
    return problems


def inspect_dataset(root: str | os.PathLike, layout: str, test_size: int | None = None,
                    verify_images: bool = True, check_files: bool = True) -> tuple[ReidDataset, list[Problem]]:
    """Parse and check; returns the (possibly partial) dataset and every problem found, never raising for data."""
    lay = LAYOUTS.get(layout)
    ds, ctx = lay.parse_root(root, test_size)
    problems = list(ctx.problems)
    if ctx.root.is_dir():
        if check_files:
            problems += check_images(ds, ctx, verify_images)
        problems += check_splits(ds, lay, ctx)
    return ds, problems


def check_dataset(root: str | os.PathLike, layout: str, test_size: int | None = None,
                  verify_images: bool = True) -> list[Problem]:
    """Every problem with the dataset at `root` read as `layout` (empty list = clean).

    Checks: list files present and well formed, attribute words known, images present (and readable with
    PIL when `verify_images`), no empty split, every query vehicle present in the gallery.
    """
    return inspect_dataset(root, layout, test_size, verify_images)[1]
