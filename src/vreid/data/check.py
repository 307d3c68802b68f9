"""Find everything wrong with a dataset on disk: list files, images, splits. Used by `vreid data check` and training."""
from __future__ import annotations

import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from vreid.data.errors import Problem
from vreid.data.images import open_rgb, unreadable_image
from vreid.data.layouts import LAYOUTS
from vreid.data.layouts.base import SPLITS, Layout, ParseContext
from vreid.data.records import ReidDataset


#: Decode images at about this size: enough to find broken data, and JPEGs then decode at a reduced scale.
CHECK_DRAFT_SIZE = (64, 64)


def _read_error(path: str) -> Exception | None:
    """None if the image decodes the way the loaders open it, else the error."""
    try:
        open_rgb(path, draft_size=CHECK_DRAFT_SIZE)
        return None
    except Exception as e:  # PIL raises many types for broken files
        return e


def verify_readable(paths: list[str], workers: int | None = None) -> dict[str, Exception]:
    """path -> error for every image that does not decode. Threads: PIL releases the GIL while decoding."""
    workers = workers or min(32, (os.cpu_count() or 1) * 4)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        errors = pool.map(_read_error, paths, chunksize=64)
        return {p: e for p, e in zip(paths, errors) if e is not None}


def _display(path: str, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return path


def check_images(ds: ReidDataset, ctx: ParseContext, verify_images: bool = True) -> list[Problem]:
    """Missing images (grouped by missing folder when a whole folder is gone) and, optionally, ones that do not
    decode (broken, truncated or too large for PIL)."""
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
        for p, error in verify_readable(present).items():
            problems.append(unreadable_image(_display(p, ctx.root), error))
    return problems


def check_splits(ds: ReidDataset, layout: Layout, ctx: ParseContext) -> list[Problem]:
    """Empty required splits, query ids that have no image in the gallery, a VehicleID test list without queries."""
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
    if ds.query and ds.protocol == "vehicleid":
        problems += _vehicleid_queries(ds, layout)
    return problems


def _vehicleid_queries(ds: ReidDataset, layout: Layout) -> list[Problem]:
    """A problem if no vehicle has two test images: each draw puts one image per id in the gallery, the rest
    are the queries, so such a test list has none."""
    images_per_id = Counter(r.vehicle_id for r in ds.query)
    if max(images_per_id.values()) >= 2:
        return []
    return [Problem(file=layout.list_file("query", ds.info.get("test_size")),
                    message=f"each of the {len(images_per_id)} vehicle(s) in the test list has one image, so the "
                            "vehicleid protocol has no query (one image per vehicle goes to the gallery, the rest "
                            "are the queries)",
                    fix="list at least two images of each vehicle, as the official test lists do")]


def viewpoint_counts(ds: ReidDataset) -> dict[str, tuple[int, int]]:
    """Split -> (images with a viewpoint, images), for `vreid data check` to show what the metadata can use."""
    return {s: (sum(r.viewpoint is not None for r in getattr(ds, s)), len(getattr(ds, s)))
            for s in SPLITS}


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

    Checks: list files present and well formed, attribute words known, images present (and decodable, as the
    loaders open them, when `verify_images`), no empty split, every query vehicle present in the gallery, and
    for VehicleID some vehicle with two or more test images (else there is no query).
    """
    return inspect_dataset(root, layout, test_size, verify_images)[1]
