"""The world of one dataset: its config, its vehicles and cameras, and the route each vehicle drives.

`plan_world` decides, from (seed, vehicle) alone, which cameras a vehicle passes, when, and how many frames
each camera keeps; `render_shot` turns one planned frame into an image.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image

from vreid.synth.cameras import CameraSpec, Light, Pose, frame_rng, make_camera, sample_pose
from vreid.errors import VreidError
from vreid.synth.catalog import Identity, get_preset, sample_identity
from vreid.synth.render import FlatMesh, render_view, vehicle_mesh

LAYOUTS = ("veri776", "vehicleid", "veriwild", "folder")
FPS = 25.0  # frame numbers in VeRi-776 file names count frames of a 25 fps clock


class SynthConfigError(VreidError, ValueError):
    """World settings that cannot be rendered; the message lists each bad value and its rule."""


@dataclass
class SynthConfig:
    """What to render. Same config => byte-identical dataset."""

    ids: int = 200
    cameras: int = 8
    seed: int = 0
    preset: str = "medium"
    size: int = 128
    layout: str = "veri776"
    workers: int = 2
    frames: tuple[int, int] = (2, 5)          # frames per track (inclusive range)
    cams_per_vehicle: tuple[float, float] = (2, 0.6)  # (min cameras, max as a fraction of all cameras)
    train_fraction: float = 0.5
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.frames = tuple(self.frames)
        self.cams_per_vehicle = tuple(self.cams_per_vehicle)
        problems = []
        if self.ids < 2:
            problems.append(f"ids={self.ids}: need at least 2 (one train, one test)")
        if self.cameras < 2:
            problems.append(f"cameras={self.cameras}: need at least 2 (queries match across cameras)")
        if self.size < 16:
            problems.append(f"size={self.size}: use 16 or more pixels")
        if self.layout not in LAYOUTS:
            problems.append(f"layout={self.layout!r}: choose one of {', '.join(LAYOUTS)}")
        if not 0.0 < self.train_fraction < 1.0:
            problems.append(f"train_fraction={self.train_fraction}: must be between 0 and 1")
        if len(self.frames) != 2 or not 1 <= self.frames[0] <= self.frames[1]:
            problems.append(f"frames={self.frames}: need (min, max) with 1 <= min <= max")
        if self.workers < 0:
            problems.append(f"workers={self.workers}: 0 renders in this process, N uses N processes")
        try:
            get_preset(self.preset)
        except ValueError as e:
            problems.append(str(e))
        if problems:
            raise SynthConfigError("bad synthetic world settings: " + "; ".join(problems))


@dataclass(frozen=True)
class Shot:
    """One planned frame: vehicle, camera, frame index in the track, time (s since midnight of day 0)."""

    vehicle_id: int
    camera_id: int
    frame: int
    n_frames: int
    seconds: float

    @property
    def frame_no(self) -> int:
        return int(round(self.seconds * FPS))


@dataclass
class VehiclePlan:
    vehicle_id: int
    train: bool
    color_id: int
    type_id: int
    model_id: int
    model_name: str
    shots: list = field(default_factory=list)


def route(seed: int, vehicle_id: int, cfg: SynthConfig) -> list[Shot]:
    """Cameras passed by one vehicle, in time order, and its frames at each (a function of seed and vehicle)."""
    r = np.random.default_rng([seed, vehicle_id, 5_003])
    lo = min(cfg.cameras, max(2, int(cfg.cams_per_vehicle[0])))
    hi = min(cfg.cameras, max(lo, int(round(cfg.cams_per_vehicle[1] * cfg.cameras))))
    n = int(r.integers(lo, hi + 1))
    cams = r.permutation(np.arange(1, cfg.cameras + 1))[:n]
    h0, h1 = get_preset(cfg.preset).hours  # traffic hours of the preset (night is before 6 and after 19)
    t = float(r.uniform(h0 * 3600, max(h0 * 3600 + 1, h1 * 3600 - 5400)))
    shots = []
    for cam in cams:
        k = int(r.integers(cfg.frames[0], cfg.frames[1] + 1))
        for f in range(k):
            shots.append(Shot(vehicle_id, int(cam), f, k, round(t * FPS) / FPS))
            t += float(r.uniform(0.2, 1.2))
        t += float(r.uniform(20, 600))
    return shots


def plan_world(cfg: SynthConfig) -> list[VehiclePlan]:
    """Every vehicle of the world with its labels, split and shots (no image is rendered here)."""
    preset = get_preset(cfg.preset)
    r = np.random.default_rng([cfg.seed, 4_001])
    n_train = min(cfg.ids - 1, max(1, int(round(cfg.ids * cfg.train_fraction))))
    train_ids = set((r.permutation(cfg.ids)[:n_train] + 1).tolist())
    plans = []
    for vid in range(1, cfg.ids + 1):
        ident = sample_identity(cfg.seed, vid, preset)
        plans.append(VehiclePlan(vid, vid in train_ids, ident.color_id, ident.type_id, ident.model_id,
                                 ident.model.name, route(cfg.seed, vid, cfg)))
    return plans


@lru_cache(maxsize=64)
def camera(seed: int, camera_id: int, preset: str) -> CameraSpec:
    return make_camera(seed, camera_id, get_preset(preset))


def identity(seed: int, vehicle_id: int, preset: str) -> Identity:
    return sample_identity(seed, vehicle_id, get_preset(preset))


def render_shot(cfg: SynthConfig, ident: Identity, mesh: FlatMesh, shot: Shot) -> tuple[Image.Image, Pose]:
    cam = camera(cfg.seed, shot.camera_id, cfg.preset)
    pose = sample_pose(cfg.seed, shot.vehicle_id, cam, shot.frame, shot.n_frames, shot.seconds, ident.model.length)
    rng = frame_rng(cfg.seed, shot.vehicle_id, shot.camera_id, shot.frame)
    rng = np.random.default_rng(rng.integers(0, 2**63 - 1))  # independent of the pose draws
    return render_view(ident, mesh, cam, pose, cfg.size, rng), pose


def daylight() -> Light:
    """A fixed, neutral daylight (for tests and previews)."""
    d = np.array([0.3, 0.5, 0.8])
    return Light(False, d / np.linalg.norm(d), np.array([0.7, 0.68, 0.64]), np.array([0.42, 0.45, 0.5]),
                 np.array([0.6, 0.68, 0.78]), 1.0)


def render_vehicle(vehicle: int | Identity, azimuth: float, elevation: float = 15.0, *, seed: int = 0,
                   preset: str = "medium", camera_id: int = 1, size: int = 128, distance: float | None = None,
                   light: Light | None = None, clean: bool = False, optics: bool = False,
                   scene: bool = True) -> Image.Image:
    """Render one vehicle from a chosen azimuth/elevation (degrees) with camera `camera_id`'s scene.

    `vehicle` is a vehicle id of world `seed` or an Identity. By default the camera's optics (blur, noise, colour
    cast, low resolution) and occluders are off so that renders are comparable; `optics=True` keeps them;
    `clean=True` gives the unshaded albedo on a gray background; `scene=False` the shaded vehicle on gray. Fixed daylight unless `light` is given.
    """
    ident = vehicle if isinstance(vehicle, Identity) else identity(seed, vehicle, preset)
    cam = camera(seed, camera_id, preset)
    if not optics:
        cam = CameraSpec(**{**cam.__dict__, "res": 1.0, "blur": 0.0, "motion": 0, "noise": 0.0,
                            "cast": (1.0, 1.0, 1.0)})
    dist = distance if distance is not None else 9.0 * max(1.0, ident.model.length / 4.5) ** 0.8
    pose = Pose(azimuth % 360.0, elevation, dist, light or daylight(), "", 12345)
    return render_view(ident, vehicle_mesh(ident), cam, pose, size, np.random.default_rng(0), clean=clean,
                       crop_margin=(0.05, 0.05, 0.05, 0.05), scene=scene)
