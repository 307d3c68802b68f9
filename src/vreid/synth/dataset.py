"""Render a synthetic world to disk in an official dataset layout (veri776, vehicleid, veriwild, folder).

The dataset is written into a temporary sibling folder and renamed into place at the end, so OUT never holds a
half-written dataset. Images are rendered per vehicle by worker processes that write their own files; only the
label rows travel back, so memory does not grow with the number of images.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from vreid.data.records import COLOR_NAMES, TYPE_NAMES
from vreid.fileio import write_text_atomic
from vreid.progress import track
from vreid.synth.render import encode_jpeg, vehicle_mesh
from vreid.synth.world import SynthConfig, VehiclePlan, camera, identity, plan_world, render_shot

SIDE_FILE = "vreid_labels.csv"
SIDE_HEADER = "path,vehicle_id,camera_id,timestamp,color_id,type_id,model_id,azimuth,elevation,viewpoint"
VEHICLEID_SIZES = (800, 1600, 2400)
VERIWILD_SIZES = (3000, 5000, 10000)
#: VeRi-Wild times are dates; day 0 of the synthetic world is this date (UTC)
DAY_ZERO = datetime(2018, 3, 1, tzinfo=timezone.utc)


def _query_frame(seed: int, vehicle_id: int, camera_id: int, n: int) -> int:
    return int(np.random.default_rng([seed, vehicle_id, camera_id, 6_007]).integers(0, n))


def assign_paths(cfg: SynthConfig, plans: list[VehiclePlan]) -> list[list[tuple]]:
    """Per vehicle, per shot: (shot, [relative paths to write], split tag) where tag is train/query/gallery/test."""
    out = []
    number = 0
    for plan in plans:
        rows = []
        for shot in plan.shots:
            number += 1
            q = (not plan.train) and shot.frame == _query_frame(cfg.seed, plan.vehicle_id, shot.camera_id,
                                                                 shot.n_frames)
            vid, cam = plan.vehicle_id, shot.camera_id
            if cfg.layout == "veri776":
                name = f"{vid:04d}_c{cam:03d}_{shot.frame_no:08d}_0.jpg"
                if plan.train:
                    rows.append((shot, [f"image_train/{name}"], "train"))
                else:
                    paths = [f"image_test/{name}"] + ([f"image_query/{name}"] if q else [])
                    rows.append((shot, paths, "query" if q else "gallery"))
            elif cfg.layout == "folder":
                name = f"images/{vid:04d}_c{cam:03d}_{shot.frame_no:08d}.jpg"
                rows.append((shot, [name], "train" if plan.train else ("query" if q else "gallery")))
            elif cfg.layout == "vehicleid":
                rows.append((shot, [f"image/{number:07d}.jpg"], "train" if plan.train else "test"))
            else:
                rows.append((shot, [f"images/{vid:05d}/{number:06d}.jpg"], "train" if plan.train else "test"))
        out.append(rows)
    return out


_JOB: dict = {}


def _init_worker(cfg: SynthConfig, root: str) -> None:
    _JOB["cfg"], _JOB["root"] = cfg, Path(root)


def _render_vehicle_job(job: tuple[VehiclePlan, list[tuple]]) -> list[str]:
    """Render and write every frame of one vehicle; return its side-file rows."""
    cfg: SynthConfig = _JOB["cfg"]
    root: Path = _JOB["root"]
    plan, shots = job
    ident = identity(cfg.seed, plan.vehicle_id, cfg.preset)
    mesh = vehicle_mesh(ident)
    rows = []
    for shot, paths, _tag in shots:
        img, pose = render_shot(cfg, ident, mesh, shot)
        data = encode_jpeg(img, camera(cfg.seed, shot.camera_id, cfg.preset).jpeg)
        for rel in paths:
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            # inside the staging folder: the folder's final rename is what makes the dataset appear atomically
            with open(p, "wb") as f:
                f.write(data)
            rows.append(f"{rel},{plan.vehicle_id},{shot.camera_id},{shot.seconds:.2f},{plan.color_id},"
                        f"{plan.type_id},{plan.model_id},{pose.azimuth:.2f},{pose.elevation:.2f},{pose.viewpoint}")
    return rows


def _run_jobs(cfg: SynthConfig, root: Path, jobs: list) -> list[str]:
    rows: list[str] = []
    if cfg.workers <= 1 or len(jobs) < 2:
        _init_worker(cfg, str(root))
        for job in track(jobs, "rendering vehicles"):
            rows.extend(_render_vehicle_job(job))
        return rows
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with mp.get_context(method).Pool(cfg.workers, initializer=_init_worker, initargs=(cfg, str(root))) as pool:
        # ordered results: the side file is the same whatever worker finished first
        for part in track(pool.imap(_render_vehicle_job, jobs, chunksize=1), "rendering vehicles", len(jobs)):
            rows.extend(part)
    return rows


def _nested_id_lists(seed: int, test_ids: list[int], sizes: tuple[int, ...], salt: int) -> dict[int, list[int]]:
    """Official list sizes scaled down: min(size, #test ids) ids, each list a subset of the next."""
    perm = np.random.default_rng([seed, salt]).permutation(sorted(test_ids)).tolist()
    return {s: sorted(perm[:min(s, len(perm))]) for s in sizes}


def _lines(items) -> str:
    return "".join(f"{x}\n" for x in items)


def _write_layout(cfg: SynthConfig, root: Path, plans: list[VehiclePlan], assigned: list[list[tuple]]) -> dict:
    """The layout's own list/label files (images are already written)."""
    counts = {"train": 0, "query": 0, "gallery": 0}
    by_vid = {p.vehicle_id: p for p in plans}
    flat = [(plans[i], shot, paths, tag) for i, rows in enumerate(assigned) for shot, paths, tag in rows]
    test_ids = [p.vehicle_id for p in plans if not p.train]
    if cfg.layout == "veri776":
        train = [(p, s, paths[0]) for p, s, paths, tag in flat if tag == "train"]
        test = [(p, s, paths[0]) for p, s, paths, tag in flat if tag in ("query", "gallery")]
        query = [(p, s, paths[1]) for p, s, paths, tag in flat if tag == "query"]
        key = lambda t: Path(t[2]).name  # noqa: E731 - official lists are sorted by name
        train.sort(key=key), test.sort(key=key), query.sort(key=key)
        write_text_atomic(root / "name_train.txt", _lines(Path(x[2]).name for x in train))
        write_text_atomic(root / "name_test.txt", _lines(Path(x[2]).name for x in test))
        write_text_atomic(root / "name_query.txt", _lines(Path(x[2]).name for x in query))
        for fname, tag, items in (("train_label.xml", "TrainingImages", train), ("test_label.xml", "TestImages", test)):
            body = "".join(f'<Item imageName="{Path(x[2]).name}" vehicleID="{x[0].vehicle_id:04d}" '
                           f'cameraID="c{x[1].camera_id:03d}" colorID="{x[0].color_id}" typeID="{x[0].type_id}" />\n'
                           for x in items)
            xml = (f'<?xml version="1.0" encoding="gb2312"?>\n<{tag} Version="1.0">\n'
                   f'<Items number="{len(items)}">\n{body}</Items>\n</{tag}>\n')
            write_text_atomic(root / fname, xml)
        # gt/jk index: per query, 1-based positions in name_test.txt of true matches / junk (same id and camera)
        pos: dict[tuple[int, int], list[int]] = {}
        by_id: dict[int, list[int]] = {}
        for i, (p, s, _) in enumerate(test, start=1):
            pos.setdefault((p.vehicle_id, s.camera_id), []).append(i)
            by_id.setdefault(p.vehicle_id, []).append(i)
        gt, jk = [], []
        for p, s, _ in query:
            junk = set(pos[(p.vehicle_id, s.camera_id)])
            gt.append(" ".join(str(i) for i in by_id[p.vehicle_id] if i not in junk))
            jk.append(" ".join(str(i) for i in sorted(junk)))
        write_text_atomic(root / "gt_index.txt", _lines(gt))
        write_text_atomic(root / "jk_index.txt", _lines(jk))
        counts = {"train": len(train), "query": len(query), "gallery": len(test)}
    elif cfg.layout == "folder":
        for split in ("train", "query", "gallery"):
            items = [(p, s, paths[0]) for p, s, paths, tag in flat if tag == split]
            write_text_atomic(root / f"{split}.csv", "path,vehicle_id,camera_id,timestamp\n" + _lines(
                f"{rel},{p.vehicle_id},{s.camera_id},{s.seconds:.2f}" for p, s, rel in items))
            counts[split] = len(items)
    elif cfg.layout == "vehicleid":
        name = lambda rel: Path(rel).stem  # noqa: E731
        train = [f"{name(paths[0])} {p.vehicle_id}" for p, s, paths, tag in flat if tag == "train"]
        write_text_atomic(root / "train_test_split/train_list.txt", _lines(train))
        lists = _nested_id_lists(cfg.seed, test_ids, VEHICLEID_SIZES, 8_009)
        for size, ids in lists.items():
            keep = set(ids)
            write_text_atomic(root / f"train_test_split/test_list_{size}.txt", _lines(
                f"{name(paths[0])} {p.vehicle_id}" for p, s, paths, tag in flat if tag == "test" and
                p.vehicle_id in keep))
        write_text_atomic(root / "attribute/color_attr.txt", _lines(f"{p.vehicle_id} {p.color_id}" for p in plans))
        write_text_atomic(root / "attribute/model_attr.txt", _lines(f"{p.vehicle_id} {p.model_id}" for p in plans))
        n_test = sum(1 for x in flat if x[3] == "test" and x[0].vehicle_id in set(lists[VEHICLEID_SIZES[0]]))
        counts = {"train": len(train), "query": n_test, "gallery": n_test,
                  "test_lists": {s: len(v) for s, v in lists.items()}}
    else:  # veriwild
        entry = lambda rel: rel[len("images/"):-len(".jpg")]  # noqa: E731
        train = [entry(paths[0]) for p, s, paths, tag in flat if tag == "train"]
        write_text_atomic(root / "train_test_split/train_list.txt", _lines(train))
        per_id: dict[int, list[str]] = {}
        for p, s, paths, tag in flat:
            if tag == "test":
                per_id.setdefault(p.vehicle_id, []).append(entry(paths[0]))
        query_of = {vid: items[int(np.random.default_rng([cfg.seed, vid, 6_011]).integers(0, len(items)))]
                    for vid, items in per_id.items()}
        lists = _nested_id_lists(cfg.seed, test_ids, VERIWILD_SIZES, 8_011)
        for size, ids in lists.items():
            write_text_atomic(root / f"train_test_split/test_{size}.txt",
                              _lines(e for vid in ids for e in per_id[vid]))
            write_text_atomic(root / f"train_test_split/test_{size}_query.txt", _lines(query_of[vid] for vid in ids))
        info = ["id/image;Camera ID;Time;Model;Type;Color"]
        for p, s, paths, tag in flat:
            when = (DAY_ZERO + timedelta(seconds=int(s.seconds))).strftime("%Y-%m-%d %H:%M:%S")
            info.append(f"{entry(paths[0])};{s.camera_id};{when};{p.model_name};{TYPE_NAMES[p.type_id]};"
                        f"{COLOR_NAMES[p.color_id]}")
        write_text_atomic(root / "train_test_split/vehicle_info.txt", _lines(info))
        first = lists[VERIWILD_SIZES[0]]
        counts = {"train": len(train), "query": len(first), "gallery": sum(len(per_id[v]) for v in first) - len(first),
                  "test_lists": {s: len(v) for s, v in lists.items()}}
    del by_vid
    return counts


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; choose another output path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; pass overwrite=True (CLI: --overwrite) to replace it")


def render_dataset(out: str | os.PathLike, cfg: SynthConfig, overwrite: bool | None = None) -> dict:
    """Render the world `cfg` into `out` in layout `cfg.layout`; returns a summary of counts.

    Refuses a non-empty `out` unless `overwrite` (or `cfg.overwrite`). Same cfg => byte-identical files.

    Example:
        >>> render_dataset("data/synth", SynthConfig(ids=200, cameras=8, preset="hard", layout="veri776"))
    """
    out = Path(out)
    overwrite = cfg.overwrite if overwrite is None else overwrite
    _check_target(out, overwrite)
    t0 = time.perf_counter()
    plans = plan_world(cfg)
    assigned = assign_paths(cfg, plans)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        rows = _run_jobs(cfg, staging, list(zip(plans, assigned)))
        rows.sort()
        write_text_atomic(staging / SIDE_FILE, SIDE_HEADER + "\n" + _lines(rows))
        counts = _write_layout(cfg, staging, plans, assigned)
        summary = {
            "layout": cfg.layout, "preset": cfg.preset, "seed": cfg.seed, "size": cfg.size,
            "ids": cfg.ids, "train_ids": sum(p.train for p in plans), "test_ids": sum(not p.train for p in plans),
            "cameras": cfg.cameras, "images": len(rows), "files": len(rows),
            "rendered": sum(len(p.shots) for p in plans), **counts,
        }
        write_text_atomic(staging / "vreid_synth.json", json.dumps(
            {"config": {k: v for k, v in vars(cfg).items() if k not in ("workers", "overwrite")},
             "summary": summary}, indent=2, sort_keys=True) + "\n")
        os.chmod(staging, 0o755)
        for p in staging.rglob("*"):  # temp files are created 0600; a dataset is meant to be shared
            if p.is_file() and p.suffix != ".jpg":
                os.chmod(p, 0o644)
        _check_target(out, overwrite)
        trash = None
        if out.exists():
            trash = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, trash)
        os.replace(staging, out)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    seconds = time.perf_counter() - t0
    summary.update(root=str(out), seconds=round(seconds, 2), images_per_s=round(summary["rendered"] / seconds, 1))
    return summary
