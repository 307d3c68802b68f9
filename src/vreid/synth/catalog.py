"""What exists in the synthetic world: vehicle models, paint colours, difficulty presets, and identities.

The model catalogue is fixed (independent of the dataset seed), like the car models of the real world; the seed
only decides which vehicles drive around. An identity is a model + a colour + its own details.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from vreid.data.records import COLOR_NAMES, TYPE_NAMES

#: body colour of each VeRi-776 colour id (sRGB, 0..1); index 0 unused like COLOR_NAMES
PAINT_RGB = {
    "yellow": (0.90, 0.76, 0.12), "orange": (0.93, 0.45, 0.10), "green": (0.16, 0.45, 0.22),
    "gray": (0.50, 0.51, 0.53), "red": (0.72, 0.08, 0.09), "blue": (0.12, 0.24, 0.60),
    "white": (0.91, 0.91, 0.90), "golden": (0.76, 0.64, 0.38), "brown": (0.40, 0.26, 0.16),
    "black": (0.07, 0.07, 0.08),
}

_MAKES = ("Arden", "Borealis", "Cassia", "Dunmore", "Eskar", "Fennec", "Galen", "Hollis", "Istra", "Jorvik")

#: how common each type is on the road (VeRi-776 is mostly sedans, SUVs and hatchbacks)
TYPE_WEIGHTS = {"sedan": 0.34, "suv": 0.18, "van": 0.06, "hatchback": 0.12, "mpv": 0.08, "pickup": 0.05,
                "bus": 0.04, "truck": 0.06, "estate": 0.07}
MODELS_PER_TYPE = 6


@dataclass(frozen=True)
class Preset:
    """Difficulty knobs. Everything a preset changes is here (documented in docs/synthetic.md)."""

    name: str
    models_per_type: int          # how many of the catalogue's models per type appear
    model_skew: float             # Zipf exponent of model popularity (higher: a few models dominate)
    color_weights: tuple          # weight per colour id 1..10
    shade_jitter: float           # per-vehicle paint variation
    detail_rate: float            # scales the probability and size of identity details
    az_spread: float              # viewpoint spread (deg) around a camera's mean azimuth
    two_way: float                # probability that a camera sees traffic in both directions
    cams_see_all_sides: bool      # camera mean azimuths anywhere (True) or only front/rear-ish (False)
    hours: tuple                  # time-of-day range of traffic (hours); outside 6..19 is night
    cast: float                   # strength of per-camera colour cast
    blur: float                   # max gaussian blur sigma (pixels at output size)
    motion: int                   # max motion blur length (pixels)
    noise: float                  # max sensor noise sigma (0..1 scale)
    jpeg: tuple                   # JPEG quality range over cameras
    res: tuple                    # native resolution range as a fraction of the output size
    occlusion: float              # probability that a frame has an occluder or a frame-edge crop
    plate_text: bool = True       # plates carry the vehicle's own text (False: a blank plate, no id in it)
    one_sided_decals: bool = False  # a side decal on one side only (True) or mirrored on both
    type_weights: tuple = ()      # (type name, weight) pairs that replace TYPE_WEIGHTS; () keeps the road mix


_REAL_COLORS = (0.02, 0.01, 0.02, 0.20, 0.10, 0.07, 0.30, 0.03, 0.05, 0.20)  # ids 1..10, white/black/gray lead
PRESETS = {
    "easy": Preset("easy", 6, 0.0, (0.1,) * 10, 0.06, 1.6, 25.0, 0.0, False, (8.0, 17.0), 0.03, 0.4, 0, 0.01,
                   (85, 95), (0.9, 1.0), 0.05),
    "medium": Preset("medium", 4, 0.8, (0.06, 0.04, 0.05, 0.14, 0.1, 0.1, 0.22, 0.05, 0.06, 0.18), 0.05, 1.0,
                     40.0, 0.3, True, (5.0, 21.0), 0.08, 0.9, 3, 0.03, (60, 90), (0.6, 1.0), 0.2),
    "hard": Preset("hard", 3, 1.2, _REAL_COLORS, 0.04, 0.7, 55.0, 0.6, True, (4.0, 23.0), 0.14, 1.4, 6, 0.05,
                   (35, 80), (0.35, 0.9), 0.4),
    # round 2: look-alikes (one model per type, four common types, so most vehicles share model and colour with
    # many others) told apart by details that only some sides show (one-sided decals, dents, rear and windshield stickers), blank plates, cameras that each see
    # a narrow range of sides: most of what is hard is the change of viewpoint between cameras
    "crossview": Preset("crossview", 1, 0.0, _REAL_COLORS, 0.04, 1.3, 20.0, 0.3, True, (5.0, 21.0), 0.08, 0.9, 3,
                        0.03, (55, 90), (0.5, 1.0), 0.2, plate_text=False, one_sided_decals=True,
                        type_weights=(("sedan", 0.45), ("suv", 0.25), ("hatchback", 0.2), ("van", 0.1))),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


@dataclass(frozen=True)
class VehicleModel:
    """One make/model: the body proportions and the layout of its lights and grille (metres, x forward)."""

    model_id: int
    name: str
    type_name: str
    length: float
    width: float
    height: float
    clearance: float
    belt: float                   # height of the beltline (hood/deck top)
    nose: float                   # front chamfer run (hood slope)
    tail: float                   # rear chamfer run
    cabin_front: float            # x of the windshield base (fraction of length from the centre, signed)
    cabin_rear: float             # x of the rear-window base (signed fraction)
    rake_front: float             # windshield horizontal run (m)
    rake_rear: float              # rear window horizontal run (m)
    tumblehome: float             # how much narrower the roof is than the beltline (m per side)
    wheel_radius: float
    wheelbase: float              # fraction of length
    headlight: tuple              # (width frac, height m, gap frac from the side, shape 0 rect 1 slanted 2 round)
    taillight: tuple              # (width frac, height m, shape 0 horizontal 1 vertical 2 full-width bar)
    grille: tuple                 # (width frac, height m, style 0 wide 1 split 2 slim)
    bumper_black: bool
    rim_style: int


def _model(type_name: str, index: int, model_id: int) -> VehicleModel:
    r = np.random.default_rng([1234, TYPE_NAMES.index(type_name), index])
    u = lambda a, b: float(r.uniform(a, b))  # noqa: E731 - short local sampler
    t = type_name
    # type-level ranges: (length, width, height, clearance, belt frac, nose, tail, cabin_front, cabin_rear)
    if t == "sedan":
        dims = (u(4.4, 4.9), u(1.75, 1.85), u(1.40, 1.50), u(0.14, 0.18), u(0.52, 0.58), u(0.25, 0.45), u(0.15, 0.3),
                u(0.12, 0.20), u(-0.30, -0.22), u(0.75, 1.0), u(0.5, 0.8))
    elif t == "hatchback":
        dims = (u(3.8, 4.25), u(1.68, 1.78), u(1.42, 1.52), u(0.14, 0.17), u(0.52, 0.58), u(0.25, 0.4), u(0.05, 0.1),
                u(0.14, 0.22), u(-0.46, -0.43), u(0.75, 0.95), u(0.25, 0.45))
    elif t == "estate":
        dims = (u(4.6, 4.95), u(1.78, 1.86), u(1.45, 1.55), u(0.14, 0.18), u(0.52, 0.57), u(0.25, 0.4), u(0.04, 0.08),
                u(0.12, 0.2), u(-0.46, -0.44), u(0.75, 0.95), u(0.12, 0.25))
    elif t == "suv":
        dims = (u(4.4, 4.9), u(1.82, 1.95), u(1.68, 1.85), u(0.20, 0.25), u(0.54, 0.6), u(0.15, 0.3), u(0.04, 0.1),
                u(0.14, 0.22), u(-0.46, -0.43), u(0.6, 0.8), u(0.08, 0.2))
    elif t == "mpv":
        dims = (u(4.6, 5.0), u(1.8, 1.9), u(1.65, 1.8), u(0.15, 0.18), u(0.5, 0.56), u(0.3, 0.45), u(0.04, 0.08),
                u(0.28, 0.36), u(-0.46, -0.44), u(1.0, 1.3), u(0.1, 0.2))
    elif t == "van":
        dims = (u(4.8, 5.4), u(1.85, 2.0), u(1.95, 2.3), u(0.16, 0.2), u(0.45, 0.5), u(0.15, 0.3), u(0.02, 0.05),
                u(0.36, 0.42), u(-0.48, -0.47), u(0.45, 0.7), u(0.02, 0.05))
    elif t == "pickup":
        dims = (u(5.0, 5.4), u(1.82, 1.92), u(1.75, 1.85), u(0.22, 0.26), u(0.55, 0.6), u(0.2, 0.35), u(0.03, 0.06),
                u(0.16, 0.22), u(-0.12, -0.05), u(0.6, 0.8), u(0.05, 0.12))
    elif t == "bus":
        dims = (u(10.0, 12.0), u(2.45, 2.55), u(3.0, 3.3), u(0.3, 0.35), u(0.3, 0.35), u(0.05, 0.1), u(0.04, 0.08),
                u(0.48, 0.49), u(-0.49, -0.485), u(0.1, 0.3), u(0.02, 0.06))
    else:  # truck: belt is the chassis/cab floor; the cargo box is added by the geometry
        dims = (u(6.5, 8.5), u(2.3, 2.5), u(3.0, 3.5), u(0.35, 0.45), u(0.35, 0.4), u(0.05, 0.1), u(0.02, 0.05),
                u(0.48, 0.49), u(0.2, 0.26), u(0.1, 0.25), u(0.02, 0.05))
    length, width, height, clearance, belt_frac, nose, tail, cf, cr, rake_f, rake_r = dims
    big = t in ("bus", "truck")
    return VehicleModel(
        model_id=model_id, name=f"{_MAKES[(index * 3 + TYPE_NAMES.index(t)) % len(_MAKES)]} {t.upper()}-{index + 1}",
        type_name=t, length=length, width=width, height=height, clearance=clearance, belt=belt_frac * height,
        nose=nose, tail=tail, cabin_front=cf, cabin_rear=cr, rake_front=rake_f, rake_rear=rake_r,
        tumblehome=0.0 if big else u(0.06, 0.16),
        wheel_radius=u(0.48, 0.55) if big else u(0.30, 0.38) + (0.04 if t in ("suv", "pickup") else 0.0),
        wheelbase=u(0.55, 0.65) if big else u(0.58, 0.66),
        headlight=(u(0.16, 0.28), u(0.08, 0.2), u(0.02, 0.08), int(r.integers(0, 3))),
        taillight=(u(0.12, 0.25), u(0.08, 0.2), int(r.integers(0, 3))),
        grille=(u(0.25, 0.55), u(0.08, 0.22), int(r.integers(0, 3))),
        bumper_black=bool(r.random() < 0.35) or t in ("pickup", "truck"),
        rim_style=int(r.integers(0, 4)),
    )


def _build_catalog() -> list[VehicleModel]:
    models = []
    for t in TYPE_NAMES[1:]:
        for i in range(MODELS_PER_TYPE):
            models.append(_model(t, i, len(models) + 1))
    return models


#: every model of the world; model_id = index + 1
CATALOG: list[VehicleModel] = _build_catalog()


@dataclass
class Identity:
    """One vehicle: model + colour + its own details (everything needed to rebuild its 3D body)."""

    vehicle_id: int
    model: VehicleModel
    color_id: int
    paint: tuple                   # per-vehicle shade of its colour (sRGB 0..1)
    plate: str
    plate_style: int               # 0 blue/white text, 1 yellow/black text, 2 white/black text
    plate_drawn: bool = True       # the plate's text is painted on it (False: a blank plate)
    stickers: list = field(default_factory=list)     # windshield stickers: (u, v, w, h, rgb)
    side_decals: list = field(default_factory=list)  # (side +1/-1, x0, x1, z0, z1, rgb)
    rear_stickers: list = field(default_factory=list)
    dents: list = field(default_factory=list)        # (side, x, z, radius, darkness)
    dirt: float = 0.0
    roof_rack: bool = False
    sunroof: bool = False
    spare_wheel: bool = False
    rim_style: int = 0
    rim_rgb: tuple = (0.7, 0.7, 0.72)
    tint: float = 0.3
    ornament: bool = False
    black_roof: bool = False

    @property
    def type_id(self) -> int:
        return TYPE_NAMES.index(self.model.type_name)

    @property
    def model_id(self) -> int:
        return self.model.model_id


def _weights(values, skew: float) -> np.ndarray:
    w = np.array([1.0 / (i + 1) ** skew for i in range(len(values))])
    return w / w.sum()


def identity_rng(seed: int, vehicle_id: int) -> np.random.Generator:
    return np.random.default_rng([seed, vehicle_id, 7_001])


def sample_identity(seed: int, vehicle_id: int, preset: Preset) -> Identity:
    """The vehicle `vehicle_id` of the world `seed`: a function of (seed, vehicle_id, preset) only."""
    r = identity_rng(seed, vehicle_id)
    weights = dict(preset.type_weights) if preset.type_weights else TYPE_WEIGHTS
    types = list(weights)
    tw = np.array([weights[t] for t in types])
    t = types[int(r.choice(len(types), p=tw / tw.sum()))]
    # models of a type in a fixed popularity order; the preset keeps the first few and skews towards the top
    first = (TYPE_NAMES.index(t) - 1) * MODELS_PER_TYPE
    k = preset.models_per_type
    model = CATALOG[first + int(r.choice(k, p=_weights(range(k), preset.model_skew)))]
    cw = np.array(preset.color_weights, dtype=float)
    if t in ("bus", "truck"):  # commercial vehicles: more yellow/green/blue/white
        cw = cw * np.array([4, 2, 4, 1, 1, 3, 1, 0.5, 0.5, 0.5])
    color_id = int(r.choice(10, p=cw / cw.sum())) + 1
    base = np.array(PAINT_RGB[COLOR_NAMES[color_id]])
    shade = base * (1.0 + r.normal(0, preset.shade_jitter)) + r.normal(0, preset.shade_jitter * 0.3, 3)
    paint = tuple(float(c) for c in np.clip(shade, 0.02, 0.97))
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
    plate = letters[int(r.integers(len(letters)))] + "".join(
        str(int(d)) if r.random() < 0.75 else letters[int(r.integers(len(letters)))] for d in r.integers(0, 10, 5))
    d = preset.detail_rate
    p = lambda x: bool(r.random() < min(1.0, x * d))  # noqa: E731
    vivid = lambda: tuple(float(c) for c in r.choice([[0.9, 0.9, 0.85], [0.2, 0.5, 0.9], [0.95, 0.8, 0.1],  # noqa: E731
                                                      [0.9, 0.2, 0.2], [0.2, 0.7, 0.3], [0.95, 0.55, 0.1]]))
    stickers = []
    for _ in range(int(r.integers(0, 4)) if r.random() < min(1.0, 0.8 * d) else 0):
        w = float(r.uniform(0.06, 0.14) * min(1.4, d))
        stickers.append((float(r.choice([r.uniform(0.04, 0.2), r.uniform(0.7, 0.9)])), float(r.uniform(0.55, 0.85)),
                         w, w * float(r.uniform(0.8, 1.4)), vivid()))
    side_decals = []
    if p(0.2):
        z0 = float(r.uniform(0.35, 0.6)) * model.belt
        x0 = float(r.uniform(-0.35, 0.1)) * model.length
        rgb = vivid()
        for side in ((int(r.choice([1, -1])),) if preset.one_sided_decals else (1, -1)):
            side_decals.append((side, x0, x0 + float(r.uniform(0.12, 0.35)) * model.length * min(1.3, d), z0,
                                z0 + float(r.uniform(0.04, 0.12)) * min(1.5, d), rgb))
    rear_stickers = []
    for _ in range(int(r.integers(1, 3)) if p(0.35) else 0):
        rear_stickers.append((float(r.uniform(0.1, 0.85)), float(r.uniform(0.1, 0.8)),
                              float(r.uniform(0.06, 0.15)), float(r.uniform(0.06, 0.15)), vivid()))
    dents = []
    for _ in range(int(r.integers(1, 4)) if p(0.25) else 0):
        dents.append((int(r.choice([1, -1])), float(r.uniform(-0.45, 0.45)) * model.length,
                      float(r.uniform(0.3, 0.9)) * model.belt, float(r.uniform(0.06, 0.15)), float(r.uniform(0.2, 0.5))))
    roofy = t in ("sedan", "hatchback", "estate", "suv", "mpv", "van")
    return Identity(
        vehicle_id=vehicle_id, model=model, color_id=color_id, paint=paint, plate=plate, plate_drawn=preset.plate_text,
        plate_style=int(r.choice(3, p=[0.6, 0.25, 0.15] if t not in ("bus", "truck") else [0.1, 0.8, 0.1])),
        stickers=stickers, side_decals=side_decals, rear_stickers=rear_stickers, dents=dents,
        dirt=float(r.uniform(0.2, 0.6)) if p(0.25) else 0.0,
        roof_rack=roofy and p(0.2), sunroof=roofy and t != "van" and p(0.3),
        spare_wheel=(t == "suv" and p(0.6)) or (t in ("van", "mpv") and p(0.1)),
        rim_style=int(r.integers(0, 4)) if p(0.5) else model.rim_style,
        rim_rgb=tuple(float(c) for c in r.choice([[0.72, 0.72, 0.74], [0.15, 0.15, 0.16], [0.75, 0.62, 0.35],
                                                   [0.45, 0.46, 0.48]], p=[0.55, 0.25, 0.05, 0.15])),
        tint=float(r.uniform(0.0, 1.0)) if p(0.6) else 0.3,
        ornament=p(0.3), black_roof=t in ("sedan", "hatchback", "suv") and p(0.08),
    )


def viewpoint_bin(azimuth: float) -> int:
    """VeRi-776 orientation label (index into VIEWPOINT_NAMES) of a camera at `azimuth` degrees.

    Azimuth is where the camera stands around the vehicle: 0 in front of it, 90 on its left, 180 behind,
    270 on its right. Eight 45-degree bins centred on 0, 45, ..., 315.
    """
    sector = int(math.floor((azimuth % 360.0 + 22.5) / 45.0)) % 8
    # sectors counter-clockwise from the front -> VIEWPOINT_NAMES indices
    return (0, 3, 2, 4, 1, 7, 5, 6)[sector]
