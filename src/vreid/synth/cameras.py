"""Cameras of the synthetic world and the poses and light under which they see a passing vehicle.

A camera is a function of (seed, camera id, preset); a track (one vehicle passing one camera) of
(seed, vehicle, camera); a frame of (seed, vehicle, camera, frame). Nothing depends on worker order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vreid.synth.catalog import Preset, viewpoint_bin


@dataclass(frozen=True)
class CameraSpec:
    camera_id: int
    az_mean: float          # where the camera stands around a vehicle driving in the road direction (deg)
    az_spread: float        # half-range of the azimuth over tracks (deg)
    two_way: bool           # also sees traffic in the opposite direction (azimuth + 180)
    elevation: tuple        # (lo, hi) degrees
    distance: tuple         # (lo, hi) metres for a 4.5 m car (scaled with the vehicle length)
    focal_mm: float         # 35 mm-equivalent focal length; long lenses stand further back (flatter perspective)
    res: float              # native resolution as a fraction of the output size
    cast: tuple             # per-channel gain (white balance of this camera)
    blur: float             # gaussian blur sigma at output size
    motion: int             # motion blur length (px)
    noise: float            # sensor noise sigma
    jpeg: int               # JPEG quality
    occlusion: float        # probability of an occluder or frame-edge crop per frame
    sun_az: float           # azimuth of the sun relative to the road direction (deg)
    road_rgb: tuple
    side_rgb: tuple         # sidewalk / verge
    far_rgb: tuple          # backdrop beyond the road
    lane_rgb: tuple
    kerb: tuple             # (y left kerb, y right kerb) in metres from the vehicle's lane centre
    shadows: tuple          # static shadows on the road: (x0, x1, y0, y1) rectangles


def make_camera(seed: int, camera_id: int, preset: Preset) -> CameraSpec:
    r = np.random.default_rng([seed, camera_id, 9_001])
    if preset.cams_see_all_sides:
        az = float(r.uniform(0, 360))
    else:
        az = float(r.choice([0.0, 180.0]) + r.uniform(-20, 20))
    el_lo = float(r.uniform(6, 25))
    focal = float(r.choice([12.0, 25.0, 50.0, 85.0]))
    dist = 5.0 + focal * 0.12 * float(r.uniform(0.8, 1.2))
    res = float(r.uniform(*preset.res))
    gray = float(r.uniform(0.28, 0.45))
    road = (gray, gray * float(r.uniform(0.97, 1.03)), gray * float(r.uniform(0.97, 1.06)))
    cast = tuple(float(1.0 + r.normal(0, preset.cast)) for _ in range(3))
    side = tuple(float(c) for c in r.choice([[0.55, 0.53, 0.5], [0.3, 0.45, 0.25], [0.6, 0.5, 0.42]]))
    far = tuple(float(c) for c in r.choice([[0.45, 0.5, 0.55], [0.25, 0.35, 0.25], [0.55, 0.5, 0.45],
                                            [0.35, 0.33, 0.38]]))
    lanes = int(r.integers(0, 3))
    shadows = tuple((float(x0), float(x0 + r.uniform(1, 6)), float(y0), float(y0 + r.uniform(0.5, 4)))
                    for x0, y0 in zip(r.uniform(-20, 15, 3), r.uniform(-9, 6, 3)) if r.random() < 0.6)
    return CameraSpec(
        camera_id=camera_id, az_mean=az, az_spread=preset.az_spread * float(r.uniform(0.5, 1.0)),
        two_way=bool(r.random() < preset.two_way), elevation=(el_lo, el_lo + float(r.uniform(5, 15))),
        distance=(dist, dist * 1.3), focal_mm=focal, res=res, cast=cast,
        blur=float(r.uniform(0, preset.blur)), motion=int(r.integers(0, preset.motion + 1)),
        noise=float(r.uniform(0.3, 1.0) * preset.noise), jpeg=int(r.integers(preset.jpeg[0], preset.jpeg[1] + 1)),
        occlusion=preset.occlusion * float(r.uniform(0.5, 1.5)), sun_az=float(r.uniform(0, 360)),
        road_rgb=road, side_rgb=side, far_rgb=far,
        lane_rgb=(0.9, 0.9, 0.85) if r.random() < 0.7 else (0.9, 0.75, 0.2),
        kerb=(1.75 + 3.5 * lanes + 0.2, -(1.75 + 3.5 * int(r.integers(0, 3)) + 0.2)), shadows=shadows,
    )


@dataclass(frozen=True)
class Light:
    night: bool
    sun_dir: np.ndarray     # unit vector towards the light, vehicle frame
    sun_rgb: np.ndarray
    ambient: np.ndarray
    sky: np.ndarray         # colour reflected by glass
    exposure: float


@dataclass(frozen=True)
class Pose:
    azimuth: float          # degrees, 0 front, 90 left, 180 rear, 270 right
    elevation: float
    distance: float         # metres from the vehicle centre
    light: Light
    occluder: str           # "", "pole", "car", "edge"
    seed: int               # for per-frame scene details (lane dash phase, occluder placement)

    @property
    def viewpoint(self) -> int:
        return viewpoint_bin(self.azimuth)


def light_at(seconds: float, cam: CameraSpec, reversed_: bool, r: np.random.Generator) -> Light:
    """Light of the time of day (seconds since midnight) at camera `cam`, in the vehicle frame."""
    hour = (seconds / 3600.0) % 24.0
    heading = 180.0 if reversed_ else 0.0
    if 6.0 <= hour < 19.0:
        el = math.radians(8 + 55 * math.sin(math.pi * (hour - 6.0) / 13.0))
        az = math.radians(cam.sun_az - heading + 15 * (hour - 12.5))
        d = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        overcast = float(r.uniform(0.0, 0.7))
        warm = 1.0 - 0.5 * max(0.0, 1.0 - abs(hour - 12.5) / 6.5) + 0.5  # warmer near dawn/dusk
        sun = (1.0 - overcast) * np.array([1.0, 0.95 / warm ** 0.3, 0.88 / warm ** 0.6]) * 0.75
        amb = np.array([0.42, 0.45, 0.5]) * (0.8 + 0.5 * overcast)
        return Light(False, d, sun, amb, np.array([0.6, 0.68, 0.78]), float(r.uniform(0.85, 1.15)))
    d = np.array([0.2, 0.1, 1.0])
    return Light(True, d / np.linalg.norm(d), np.array([0.32, 0.25, 0.15]), np.array([0.1, 0.09, 0.09]),
                 np.array([0.15, 0.14, 0.16]), float(r.uniform(0.8, 1.1)))


def track_rng(seed: int, vehicle_id: int, camera_id: int) -> np.random.Generator:
    return np.random.default_rng([seed, vehicle_id, camera_id, 2])


def frame_rng(seed: int, vehicle_id: int, camera_id: int, frame: int) -> np.random.Generator:
    return np.random.default_rng([seed, vehicle_id, camera_id, frame, 3])


def sample_pose(seed: int, vehicle_id: int, cam: CameraSpec, frame: int, n_frames: int, seconds: float,
                length: float) -> Pose:
    """Pose of frame `frame` (0-based) of the track of `vehicle_id` at `cam`: the vehicle drives through the view."""
    tr = track_rng(seed, vehicle_id, cam.camera_id)
    reversed_ = cam.two_way and bool(tr.random() < 0.5)
    az0 = cam.az_mean + (180.0 if reversed_ else 0.0) + float(tr.uniform(-cam.az_spread, cam.az_spread))
    sweep = float(tr.uniform(4, 18)) * (1 if tr.random() < 0.5 else -1)
    el0 = float(tr.uniform(*cam.elevation))
    d0 = float(tr.uniform(*cam.distance))
    fr = frame_rng(seed, vehicle_id, cam.camera_id, frame)
    progress = frame / max(1, n_frames - 1) - 0.5
    az = (az0 + sweep * progress + float(fr.normal(0, 2.0))) % 360.0
    el = float(np.clip(el0 - 3.0 * progress + fr.normal(0, 1.0), 2.0, 60.0))
    scale = max(1.0, length / 4.5) ** 0.8
    dist = d0 * scale * (1.0 + 0.15 * progress)
    occ = ""
    if fr.random() < cam.occlusion:
        occ = str(fr.choice(["pole", "car", "edge"]))
    light = light_at(seconds, cam, reversed_, fr)
    return Pose(az, el, dist, light, occ, int(fr.integers(0, 2**31 - 1)))
