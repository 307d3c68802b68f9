"""The side label file `vreid_labels.csv`: extra per-image labels (time, colour, type, model, viewpoint) for any layout.

Written by the synthetic world next to the official files; any layout merges it by path relative to the root.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import os
from pathlib import Path

from vreid.data.layouts.base import SPLITS, ParseContext
from vreid.data.records import VIEWPOINT_NAMES, ImageRecord, ReidDataset

SIDE_FILE = "vreid_labels.csv"
SIDE_COLUMNS = ("path", "vehicle_id", "camera_id", "timestamp", "color_id", "type_id", "model_id",
                "azimuth", "elevation", "viewpoint")
_INT_FIELDS = ("vehicle_id", "camera_id", "color_id", "type_id", "model_id")
_FLOAT_FIELDS = ("timestamp", "azimuth", "elevation")


def _viewpoint(text: str) -> int | None:
    if text.lstrip("-").isdigit():
        v = int(text)
        return v if 0 <= v < len(VIEWPOINT_NAMES) else None
    name = text.lower().replace("-", "_").replace(" ", "_")
    return VIEWPOINT_NAMES.index(name) if name in VIEWPOINT_NAMES else None


def read_side_labels(ctx: ParseContext, rel: str = SIDE_FILE) -> dict[str, dict]:
    """Relative posix path -> {field: value} for the non-empty cells of the side file; {} if there is none."""
    p = ctx.path(rel)
    if not p.is_file():
        return {}
    text = p.read_bytes().decode("utf-8-sig", errors="replace")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        return {}
    header = [h.strip() for h in header]
    if "path" not in header:
        ctx.problem(rel, f"header has no 'path' column (got {','.join(header)})",
                    f"first line must be {','.join(SIDE_COLUMNS)}", line=1)
        return {}
    unknown = [h for h in header if h not in SIDE_COLUMNS]
    if unknown:
        ctx.problem(rel, f"unknown column(s) {', '.join(unknown)}", f"use only {','.join(SIDE_COLUMNS)}", line=1)
    out: dict[str, dict] = {}
    for lineno, row in enumerate(reader, start=2):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            ctx.problem(rel, f"expected {len(header)} fields, got {len(row)}", "one value per header column "
                        "(leave unknown ones empty)", line=lineno)
            continue
        cells = {h: c.strip() for h, c in zip(header, row)}
        values: dict = {}
        bad = []
        for key, text in cells.items():
            if key == "path" or key not in SIDE_COLUMNS or text == "":
                continue
            try:
                if key in _INT_FIELDS:
                    values[key] = int(text)
                elif key in _FLOAT_FIELDS:
                    values[key] = float(text)
                elif key == "viewpoint":
                    v = _viewpoint(text)
                    if v is None:
                        raise ValueError
                    values[key] = v
            except ValueError:
                bad.append(f"{key}={text!r}")
        if bad:
            ctx.problem(rel, f"bad value(s) {', '.join(bad)}", "integers for ids, numbers for time and angles, "
                        f"viewpoint 0..{len(VIEWPOINT_NAMES) - 1} or one of {', '.join(VIEWPOINT_NAMES)}",
                        line=lineno)
            continue
        out[Path(cells["path"]).as_posix()] = values
    return out


def apply_side_labels(ds: ReidDataset, ctx: ParseContext, set_camera: bool = False) -> int:
    """Fill the extra fields of every record that the side file names; returns how many records matched.

    The side file's vehicle id must agree with the layout's (a disagreement is a problem); its camera id is
    used only where the layout has no cameras (`set_camera`), otherwise it must agree too.
    """
    side = read_side_labels(ctx)
    if not side:
        return 0
    matched = 0
    for split in SPLITS:
        records: list[ImageRecord] = getattr(ds, split)
        for i, r in enumerate(records):
            rel = Path(os.path.relpath(r.path, ctx.root)).as_posix()
            values = side.get(rel)
            if values is None:
                continue
            matched += 1
            values = dict(values)
            vid = values.pop("vehicle_id", None)
            if vid is not None and vid != r.vehicle_id:
                ctx.problem(SIDE_FILE, f"{rel} has vehicle_id {vid} but the {split} list says {r.vehicle_id}",
                            "regenerate the side file or fix the list")
            cam = values.pop("camera_id", None)
            if cam is not None:
                if set_camera:
                    values["camera_id"] = cam
                elif cam != r.camera_id:
                    ctx.problem(SIDE_FILE, f"{rel} has camera_id {cam} but the layout says {r.camera_id}",
                                "regenerate the side file or fix the list")
            records[i] = dataclasses.replace(r, **values)
    ds.info["side_labels"] = matched
    return matched
