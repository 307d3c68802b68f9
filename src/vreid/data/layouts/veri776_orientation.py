"""VeRi-776 orientation labels: `keypoint_orient_{train,test}.txt` (the MBR repository's name) in the dataset root.

Each line: image name or path, 20 keypoints as 40 integers (x y, -1 = not visible), then the orientation bin 0..7
(an index into VIEWPOINT_NAMES). Only the name and the last column are read, as TransReID and MBR do.
"""
from __future__ import annotations

import dataclasses
from pathlib import PurePosixPath

from vreid.data.layouts.base import ParseContext
from vreid.data.records import VIEWPOINT_NAMES, ReidDataset

#: file stem -> the splits it labels: query images are copies of image_test images under the same names.
ORIENTATION_SPLITS = {"train": ("train",), "test": ("query", "gallery")}
#: where the file for a stem is looked for, first found wins: MBR's name, then TransReID's (same content, with a
#: `VeRi/image_test/` prefix on the names), in the root or in a copy of TransReID's `datasets/` folder.
ORIENTATION_FILES = ("keypoint_orient_{}.txt", "keypoint_{}.txt", "datasets/keypoint_{}.txt")
FORMAT_FIX = ("each line is an image name (or path), its keypoint coordinates and, last, the orientation bin "
              f"0..{len(VIEWPOINT_NAMES) - 1}, separated by spaces (see docs/datasets.md)")


def orientation_file(ctx: ParseContext, stem: str) -> str | None:
    """The orientation file for `stem` ('train' or 'test') relative to the root, or None if there is none."""
    return next((rel for rel in (f.format(stem) for f in ORIENTATION_FILES) if ctx.path(rel).is_file()), None)


def _image_name(field: str) -> str:
    return PurePosixPath(field.replace("\\", "/")).name


def read_orientations(ctx: ParseContext, rel: str) -> dict[str, tuple[int, int]]:
    """Image name -> (orientation bin, line number); malformed lines and bins out of range are problems."""
    out: dict[str, tuple[int, int]] = {}
    for lineno, line in ctx.lines(rel, required=False, what="orientation file") or ():
        fields = line.split()
        if len(fields) < 2 or not fields[-1].lstrip("-").isdigit():
            ctx.problem(rel, f"malformed line {line[:60]!r}", FORMAT_FIX, line=lineno)
            continue
        name, view = _image_name(fields[0]), int(fields[-1])
        if not 0 <= view < len(VIEWPOINT_NAMES):
            ctx.problem(rel, f"{name}: orientation bin {view} is not one of 0..{len(VIEWPOINT_NAMES) - 1}",
                        f"correct the last column ({', '.join(f'{i} {n}' for i, n in enumerate(VIEWPOINT_NAMES))})",
                        line=lineno)
            continue
        if name in out and out[name][0] != view:
            ctx.problem(rel, f"{name} has bin {view} here but {out[name][0]} at line {out[name][1]}",
                        "keep one line per image", line=lineno)
            continue
        out[name] = (view, lineno)
    return out


def _label_splits(ds: ReidDataset, splits: tuple[str, ...], views: dict[str, tuple[int, int]]) -> set[str]:
    """Set the viewpoint of every record of `splits` named in `views`; returns the names that matched."""
    matched = set()
    for split in splits:
        records = getattr(ds, split)
        for i, r in enumerate(records):
            name = _image_name(r.path)
            if name in views:
                records[i] = dataclasses.replace(r, viewpoint=views[name][0])
                matched.add(name)
    return matched


def apply_orientations(ds: ReidDataset, ctx: ParseContext) -> int:
    """Fill `viewpoint` from the orientation files present; returns how many records got one.

    Lines naming an image no list holds are left out and counted in `ds.info["orientation_unlisted"]` (the
    released files cover images the official lists dropped); they are not problems, so real VeRi-776 loads.
    """
    labelled, unlisted = 0, 0
    for stem, splits in ORIENTATION_SPLITS.items():
        rel = orientation_file(ctx, stem)
        if rel is None:
            continue
        views = read_orientations(ctx, rel)
        matched = _label_splits(ds, splits, views)
        labelled += sum(r.viewpoint is not None for s in splits for r in getattr(ds, s))
        if any(getattr(ds, s) for s in splits):  # an empty split's missing list is reported already
            unlisted += sum(name not in matched for name in views)
    ds.info["orientation_labels"] = labelled
    ds.info["orientation_unlisted"] = unlisted
    return labelled
