"""Contact sheet of the synthetic world: rows = identities, columns = cameras (what each camera makes of them)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vreid.data.records import COLOR_NAMES, VIEWPOINT_NAMES
from vreid.fileio import atomic_path
from vreid.synth.cameras import frame_rng, sample_pose
from vreid.synth.catalog import get_preset
from vreid.synth.render import render_view, vehicle_mesh
from vreid.synth.world import SynthConfig, camera, identity


def pick_rows(cfg: SynthConfig, rows: int) -> list[int]:
    """Vehicle ids for the sheet: pairs that share model and colour first (the hard cases), then others."""
    idents = [identity(cfg.seed, v, cfg.preset) for v in range(1, max(cfg.ids, rows * 4) + 1)]
    groups: dict[tuple, list[int]] = {}
    for ident in idents:
        groups.setdefault((ident.model_id, ident.color_id), []).append(ident.vehicle_id)
    picked: list[int] = []
    for members in sorted(groups.values(), key=lambda m: (-len(m), m[0])):
        if len(members) >= 2 and len(picked) + 2 <= rows // 2 * 2 and len(picked) < rows - 2:
            picked.extend(members[:2])
    for ident in idents:
        if len(picked) >= rows:
            break
        if ident.vehicle_id not in picked:
            picked.append(ident.vehicle_id)
    return picked[:rows]


def write_preview(path: str | os.PathLike, cfg: SynthConfig | None = None, rows: int = 6, tile: int = 96,
                  vehicle_ids: list[int] | None = None) -> Path:
    """Render one frame of each chosen vehicle at each camera (up to 8) into a PNG contact sheet."""
    cfg = cfg or SynthConfig()
    vids = vehicle_ids or pick_rows(cfg, rows)
    cams = list(range(1, min(cfg.cameras, 8) + 1))
    label_w, head_h = 118, 16
    sheet = Image.new("RGB", (label_w + tile * len(cams), head_h + tile * len(vids)), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    for j, c in enumerate(cams):
        draw.text((label_w + j * tile + 4, 2), f"camera {c}", fill=(0, 0, 0))
    for i, vid in enumerate(vids):
        ident = identity(cfg.seed, vid, cfg.preset)
        mesh = vehicle_mesh(ident)
        y = head_h + i * tile
        draw.text((4, y + 4), f"id {vid}", fill=(0, 0, 0))
        draw.text((4, y + 18), ident.model.name, fill=(0, 0, 0))
        draw.text((4, y + 32), f"{COLOR_NAMES[ident.color_id]}", fill=(0, 0, 0))
        draw.text((4, y + 46), f"plate {ident.plate}", fill=(60, 60, 60))
        for j, c in enumerate(cams):
            cam = camera(cfg.seed, c, cfg.preset)
            h0, h1 = get_preset(cfg.preset).hours
            seconds = float(np.random.default_rng([cfg.seed, vid, c, 17]).uniform(h0, h1)) * 3600
            pose = sample_pose(cfg.seed, vid, cam, 0, 3, seconds, ident.model.length)
            img = render_view(ident, mesh, cam, pose, tile - 4, frame_rng(cfg.seed, vid, c, 99))
            x0 = label_w + j * tile + (tile - img.width) // 2
            y0 = y + (tile - img.height) // 2
            sheet.paste(img, (x0, y0))
            draw.text((label_w + j * tile + 3, y + tile - 13), VIEWPOINT_NAMES[pose.viewpoint], fill=(255, 255, 0))
    path = Path(path)
    with atomic_path(path) as tmp:
        # a 256-colour palette keeps the sheet small enough for docs
        sheet.quantize(256, dither=Image.Dither.NONE).save(tmp, format="PNG", optimize=True)
    os.chmod(path, 0o644)  # temp files are created 0600
    return path
