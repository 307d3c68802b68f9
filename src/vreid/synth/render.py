"""The renderer: perspective projection, back-face culling + painter's order of convex parts, Lambert shading,
a road scene with shadows and occluders, then the camera's optics (resolution, blur, noise, colour cast, JPEG).

Polygons are filled by Pillow (C); projection, culling and shading are numpy over all polygons of a frame.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from vreid.synth.cameras import CameraSpec, Light, Pose
from vreid.synth.catalog import Identity
from vreid.synth.geometry import GLASS, HEADLIGHT, METAL, PAINT, TAILLIGHT, Part, Prism, build_vehicle, part_order

SUPERSAMPLE = 2
NEAR = 0.2


@dataclass
class FlatMesh:
    """All polygons of a set of parts in flat arrays (one projection and one shading pass per frame)."""

    verts: np.ndarray        # (V, 3)
    starts: np.ndarray       # (P,) first vertex of each polygon
    counts: np.ndarray       # (P,)
    normals: np.ndarray      # (P, 3)
    rgb: np.ndarray          # (P, 3)
    material: np.ndarray     # (P,)
    face_of: np.ndarray      # (P,) the face polygon a polygon belongs to (itself for faces)
    part_polys: list         # per part: polygon indices in drawing order (each face followed by its decals)
    parts: list              # the Part objects (for ordering)
    face_verts: np.ndarray   # vertex indices of faces only (for the bounding box)
    part_centres: np.ndarray  # (n_parts, 3)


def flatten(parts: list[Part]) -> FlatMesh:
    verts, starts, counts, normals, rgbs, mats, face_of, part_polys, face_vi = [], [], [], [], [], [], [], [], []
    n_v = 0
    for part in parts:
        order = []
        for fi, (v, n, rgb, mat, _name) in enumerate(part.faces):
            face_idx = len(starts)
            for poly_v, poly_rgb, poly_mat in [(v, rgb, mat)] + part.decals.get(fi, []):
                idx = len(starts)
                starts.append(n_v)
                counts.append(len(poly_v))
                verts.append(poly_v)
                if idx == face_idx:
                    face_vi.extend(range(n_v, n_v + len(poly_v)))
                n_v += len(poly_v)
                normals.append(n)
                rgbs.append(poly_rgb)
                mats.append(poly_mat)
                face_of.append(face_idx)
                order.append(idx)
        part_polys.append(order)
    return FlatMesh(np.concatenate(verts), np.array(starts), np.array(counts), np.array(normals),
                    np.array(rgbs, dtype=float), np.array(mats), np.array(face_of), part_polys, parts,
                    np.array(face_vi), np.array([np.concatenate([f[0] for f in p.faces]).mean(0) for p in parts]))


class Camera:
    """A pinhole looking from `pos` at `target`; `project` gives normalised image coordinates (focal 1)."""

    def __init__(self, pos: np.ndarray, target: np.ndarray):
        self.pos = pos
        f = target - pos
        f /= np.linalg.norm(f)
        r = np.cross(f, [0.0, 0.0, 1.0])
        r /= np.linalg.norm(r)
        u = np.cross(r, f)
        self.R = np.stack([r, u, f])

    def to_cam(self, p: np.ndarray) -> np.ndarray:
        return (p - self.pos) @ self.R.T

    def project(self, p: np.ndarray) -> np.ndarray:
        c = self.to_cam(p)
        z = np.maximum(c[:, 2], NEAR)
        return np.stack([c[:, 0] / z, -c[:, 1] / z], 1)


def shade(normals, rgb, material, centroids, cam_pos, light: Light, clean: bool) -> np.ndarray:
    """Lambert + a Blinn highlight for paint/metal, sky reflection for glass, emissive lights at night."""
    if clean:
        return rgb.copy()
    ndl = np.clip(normals @ light.sun_dir, 0.0, None)[:, None]
    col = rgb * (light.ambient + light.sun_rgb * ndl * 1.25)
    view = cam_pos - centroids
    view /= np.linalg.norm(view, axis=1, keepdims=True) + 1e-9
    half = view + light.sun_dir
    half /= np.linalg.norm(half, axis=1, keepdims=True) + 1e-9
    spec = np.clip((normals * half).sum(1), 0, None) ** 40
    shiny = np.isin(material, (PAINT, METAL, GLASS, HEADLIGHT))
    col += (shiny * spec * (0.5 if not light.night else 0.1))[:, None] * light.sun_rgb
    up = np.clip(normals[:, 2], 0, None)[:, None]
    glass = material == GLASS
    col[glass] = rgb[glass] * 0.7 + light.sky * (0.08 + 0.3 * up[glass])
    paint = material == PAINT
    col[paint] += light.sky * 0.07 * up[paint]
    if light.night:
        col[material == HEADLIGHT] = (1.2, 1.15, 1.0)
        col[material == TAILLIGHT] = (1.0, 0.12, 0.08)
    return col


def _clip_near(pc: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman clip of a camera-space polygon against z >= NEAR."""
    if pc[:, 2].min() >= NEAR:
        return pc
    out = []
    n = len(pc)
    for i in range(n):
        a, b = pc[i], pc[(i + 1) % n]
        ina, inb = a[2] >= NEAR, b[2] >= NEAR
        if ina:
            out.append(a)
        if ina != inb:
            t = (NEAR - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out) if out else np.zeros((0, 3))


def _rect(x0, x1, y0, y1, z=0.0):
    return np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], dtype=float)


def _hull(pts: np.ndarray) -> np.ndarray:
    """Convex hull of 2D points (monotone chain)."""
    pts = np.unique(np.round(pts, 6), axis=0)
    if len(pts) < 3:
        return pts
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]
    def cross(o, a, b):  # noqa: E306
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(tuple(p))
    for p in pts[::-1]:
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(tuple(p))
    return np.array(lower[:-1] + upper[:-1])


class _Canvas:
    def __init__(self, cam: Camera, origin: np.ndarray, scale: float, w: int, h: int, base: np.ndarray):
        self.cam, self.origin, self.scale, self.w, self.h = cam, origin, scale, w, h
        self.img = Image.fromarray(base)
        self.draw = ImageDraw.Draw(self.img)

    def px(self, uv: np.ndarray) -> list:
        p = (uv - self.origin) * self.scale
        return [(float(x), float(y)) for x, y in p]

    def world_poly(self, pts: np.ndarray, rgb, draw=None) -> None:
        pc = _clip_near(self.cam.to_cam(pts))
        if len(pc) < 3:
            return
        uv = np.stack([pc[:, 0] / pc[:, 2], -pc[:, 1] / pc[:, 2]], 1)
        (draw or self.draw).polygon(self.px(uv), fill=_rgb8(rgb) if draw is None else rgb)

    def world_quads(self, quads: np.ndarray, rgb) -> None:
        """Many ground quads (n, 4, 3) of one colour: one projection for all, clipping only where needed."""
        pc = self.cam.to_cam(quads.reshape(-1, 3)).reshape(quads.shape)
        inside = pc[:, :, 2].min(1) >= NEAR
        fill = _rgb8(rgb)
        z = pc[inside][:, :, 2:3]
        uv = np.concatenate([pc[inside][:, :, :1] / z, -pc[inside][:, :, 1:2] / z], 2)
        pix = (uv - self.origin) * self.scale
        for q in pix:
            self.draw.polygon(q.ravel().tolist(), fill=fill)
        for q in quads[~inside]:
            self.world_poly(q, rgb)


_SHADOW_LUT = [int(v * 0.3) for v in range(256)] * 3
_BEAM_LUT = [min(255, int(v * 1.8 + 70)) for v in range(256)] * 3


def _rgb8(c) -> tuple:  # noqa: E302
    return tuple(int(max(0, min(255, round(255 * v)))) for v in c)


def _simple_car(rng: np.random.Generator, dx: float, dy: float) -> list[Part]:
    """An anonymous car in another lane: body and cabin only (occluder / background traffic)."""
    L, W, H = float(rng.uniform(4.0, 5.0)), float(rng.uniform(1.7, 1.9)), float(rng.uniform(1.4, 1.8))
    rgb = tuple(float(c) for c in rng.choice([[0.9, 0.9, 0.9], [0.08, 0.08, 0.08], [0.5, 0.5, 0.52],
                                              [0.6, 0.1, 0.1], [0.15, 0.25, 0.55]]))
    belt = 0.55 * H
    body = Prism([(dx - L / 2, 0.25), (dx + L / 2, 0.25), (dx + L / 2, belt), (dx - L / 2, belt)],
                 ["bottom", "front", "top", "rear"], (dy + W / 2, 0.0), (dy - W / 2, 0.0))
    cab = Prism([(dx - L * 0.35, belt), (dx + L * 0.15, belt), (dx - L * 0.05, H), (dx - L * 0.3, H)],
                ["floor", "windshield", "roof", "back"], (dy + W / 2 - 0.1, 0.0), (dy - W / 2 + 0.1, 0.0))
    bp = body.to_part("other_body", rgb, PAINT, {"bottom": ((0.05, 0.05, 0.05), PAINT)})
    cp = cab.to_part("other_cabin", rgb, PAINT, {"windshield": ((0.12, 0.14, 0.16), GLASS),
                                                 "back": ((0.12, 0.14, 0.16), GLASS)})
    cp.above.append(("other_body", np.array([0, 0, belt]), np.array([0.0, 0.0, 1.0])))
    return [bp, cp]


def _draw_parts(canvas: _Canvas, mesh: FlatMesh, light: Light, clean: bool, emissive=None) -> None:
    cam = canvas.cam
    uv = cam.project(mesh.verts)
    face_pt = mesh.verts[mesh.starts]
    visible = ((cam.pos - face_pt) * mesh.normals).sum(1) > 1e-6
    visible = visible[mesh.face_of]
    cents = np.add.reduceat(mesh.verts, mesh.starts) / mesh.counts[:, None]
    colors = shade(mesh.normals, mesh.rgb, mesh.material, cents, cam.pos, light, clean)
    col8 = np.clip(np.round(colors * 255), 0, 255).astype(np.uint8)
    pix = (uv - canvas.origin) * canvas.scale
    draw = canvas.draw
    for pi in part_order(mesh.parts, cam.pos, mesh.part_centres):
        for k in mesh.part_polys[pi]:
            if not visible[k]:
                continue
            s, n = mesh.starts[k], mesh.counts[k]
            pts = pix[s:s + n].ravel().tolist()
            draw.polygon(pts, fill=tuple(col8[k].tolist()))
            if emissive is not None and light.night and mesh.material[k] in (HEADLIGHT, TAILLIGHT):
                emissive.polygon(pts, fill=(255, 235, 200) if mesh.material[k] == HEADLIGHT else (255, 30, 20))


def vehicle_mesh(ident: Identity) -> FlatMesh:
    return flatten(build_vehicle(ident))


def render_view(ident: Identity, mesh: FlatMesh | None, cam_spec: CameraSpec, pose: Pose, size: int,
                rng: np.random.Generator, clean: bool = False, crop_margin: tuple | None = None,
                scene: bool = True) -> Image.Image:
    """One image of `ident` seen by `cam_spec` under `pose`, cropped around the vehicle like a detector box.

    `clean=True`: unshaded albedo on a plain background, no optics (for tests and label checks).
    `scene=False`: shaded vehicle on a plain gray background (no road, traffic or occluders).
    The long side of the result is `size`; the other side follows the crop's aspect ratio (at most 2.5:1).
    """
    mesh = mesh or vehicle_mesh(ident)
    m = ident.model
    light = pose.light
    az, el = math.radians(pose.azimuth), math.radians(pose.elevation)
    target = np.array([0.0, 0.0, m.height * 0.45])
    pos = target + pose.distance * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    cam = Camera(pos, target)
    srng = np.random.default_rng(pose.seed)
    # detector-like crop around the projected body
    uv = cam.project(mesh.verts[mesh.face_verts])
    lo, hi = uv.min(0), uv.max(0)
    ext = hi - lo
    margins = crop_margin if crop_margin is not None else srng.uniform(0.02, 0.12, 4)
    lo = lo - ext * np.array(margins[:2])
    hi = hi + ext * np.array(margins[2:])
    if pose.occluder == "edge" and not clean:  # the vehicle leaves the frame: one side cut off
        side = int(srng.integers(0, 4))
        cut = float(srng.uniform(0.1, 0.3))
        if side < 2:
            lo[side] += cut * (hi[side] - lo[side])
        else:
            hi[side - 2] -= cut * (hi[side - 2] - lo[side - 2])
    ext = hi - lo
    aspect = ext[0] / ext[1]
    if aspect > 2.5:
        grow = ext[0] / 2.5 - ext[1]
        lo[1] -= grow / 2
        hi[1] += grow / 2
    elif aspect < 0.4:
        grow = ext[1] * 0.4 - ext[0]
        lo[0] -= grow / 2
        hi[0] += grow / 2
    ext = hi - lo
    native = size if clean else max(16, int(round(size * cam_spec.res)))
    long_px = native * SUPERSAMPLE
    scale = long_px / ext.max()
    w, h = max(4, int(round(ext[0] * scale))), max(4, int(round(ext[1] * scale)))
    out_w, out_h = (size, max(8, int(round(size * h / w)))) if w >= h else (max(8, int(round(size * w / h))), size)

    # backdrop: a vertical gradient (buildings/trees beyond the road), darker at night
    far = np.array(cam_spec.far_rgb) * (0.25 if light.night else 1.0)
    if clean or not scene:
        base = np.full((h, w, 3), 128, np.uint8)
    else:
        rows = np.clip(far[None, :] * np.linspace(1.1, 0.8, h)[:, None] * 255, 0, 255).astype(np.uint8)
        base = np.ascontiguousarray(np.broadcast_to(rows[:, None, :], (h, w, 3)))
    canvas = _Canvas(cam, lo, scale, w, h, base)
    glow = None
    if not clean:
        if scene:
            _draw_ground(canvas, cam_spec, light, srng, mesh, m)
        glow_img = Image.new("RGB", (w, h), 0) if light.night else None
        glow = ImageDraw.Draw(glow_img) if glow_img is not None else None
    others = []
    if not clean and scene and pose.occluder == "car":
        side = 1.0 if pos[1] > 0 else -1.0
        others = _simple_car(srng, float(srng.uniform(-3, 3)) + math.cos(az) * 2.0, side * 3.5)
    elif not clean and scene and srng.random() < 0.25:  # background traffic in the far lane
        side = -1.0 if pos[1] > 0 else 1.0
        others = _simple_car(srng, float(srng.uniform(-7, 7)), side * 3.5)
    other_mesh = flatten(others) if others else None
    other_first = other_mesh is not None and np.linalg.norm(other_mesh.verts.mean(0) - pos) > pose.distance
    if other_first:
        _draw_parts(canvas, other_mesh, light, clean)
    _draw_parts(canvas, mesh, light, clean, glow)
    if other_mesh is not None and not other_first:
        _draw_parts(canvas, other_mesh, light, clean)
    if not clean and pose.occluder == "pole":
        _draw_pole(canvas, cam, pos, light, srng, m)
    img = canvas.img
    if clean:
        return img.reduce(SUPERSAMPLE) if SUPERSAMPLE > 1 else img
    # optics: glow of lights at night, white balance, exposure, resolution, blur, noise
    if glow is not None:
        g = np.asarray(glow_img.filter(ImageFilter.GaussianBlur(radius=max(1.5, long_px / 40))), np.float32) / 255.0
        arr = np.asarray(img, np.float32) + 0.9 * g * 255.0
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    img = img.reduce(SUPERSAMPLE)
    if img.size != (out_w, out_h):
        img = img.resize((out_w, out_h), Image.BILINEAR)
    if cam_spec.blur > 0.25:
        img = img.filter(ImageFilter.GaussianBlur(radius=cam_spec.blur * size / 128))
    arr = np.asarray(img, np.float32)
    if cam_spec.motion > 1:
        k = cam_spec.motion
        pad = np.pad(arr, ((0, 0), (k, 0), (0, 0)), mode="edge")
        c = np.cumsum(pad, axis=1)
        arr = (c[:, k:] - c[:, :-k]) / k
    gain = np.array(cam_spec.cast, np.float32) * light.exposure
    noise = cam_spec.noise * (2.5 if light.night else 1.0) * 255
    arr = arr * gain + rng.standard_normal(arr.shape, dtype=np.float32) * noise
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _draw_ground(canvas: _Canvas, cam_spec: CameraSpec, light: Light, r: np.random.Generator, mesh: FlatMesh,
                 m) -> None:
    lit = light.ambient + light.sun_rgb * max(0.0, float(light.sun_dir[2])) * 1.25
    yl, yr = cam_spec.kerb
    X = 80.0
    road = np.array(cam_spec.road_rgb) * lit
    side = np.array(cam_spec.side_rgb) * lit
    canvas.world_poly(_rect(-X, X, yl + 0.25, yl + 40), side)
    canvas.world_poly(_rect(-X, X, yr - 40, yr - 0.25), side)
    canvas.world_poly(_rect(-X, X, yr, yl), road)
    kerb = np.array([0.7, 0.7, 0.68]) * lit
    canvas.world_poly(_rect(-X, X, yl, yl + 0.25, 0.0), kerb)
    canvas.world_poly(_rect(-X, X, yr - 0.25, yr, 0.0), kerb)
    lane = np.array(cam_spec.lane_rgb) * lit
    phase = float(r.uniform(0, 9))
    dashes = [_rect(x0, x0 + 3.0, y - 0.07, y + 0.07, 0.0) for y in np.arange(yr + 3.7, yl - 1.0, 3.5)
              for x0 in np.arange(-30 - phase, 30, 9.0)]
    if dashes:
        canvas.world_quads(np.stack(dashes), lane)
    # shadows: static ones of the scene and the vehicle's own, multiplied into the ground
    mask_img = Image.new("L", (canvas.w, canvas.h), 0)
    md = ImageDraw.Draw(mask_img)
    if not light.night:
        for (x0, x1, y0, y1) in cam_spec.shadows:
            canvas.world_poly(_rect(x0, x1, y0, y1), 150, md)
        d = light.sun_dir
        L, W, H = m.length / 2, m.width / 2, m.height
        v = np.array([[x, y, z] for x in (-L, L) for y in (-W, W) for z in (0.0, m.belt)]
                     + [[x, y, H] for x in (m.cabin_rear * 2 * L + m.rake_rear, m.cabin_front * 2 * L - m.rake_front)
                        for y in (-W + 0.1, W - 0.1)])
        ground = v[:, :2] - v[:, 2:3] * (d[:2] / max(d[2], 0.15))
        hull = _hull(ground)
        if len(hull) >= 3:
            canvas.world_poly(np.c_[hull, np.zeros(len(hull))], 170, md)
    # contact shadow under the body
    canvas.world_poly(_rect(-m.length / 2, m.length / 2, -m.width / 2 - 0.1, m.width / 2 + 0.1), 210, md)
    dark = canvas.img.point(_SHADOW_LUT)
    img = Image.composite(dark, canvas.img, mask_img)
    if light.night:
        beam = Image.new("L", (canvas.w, canvas.h), 0)
        canvas.world_poly(np.array([[m.length / 2, 0.8, 0], [m.length / 2 + 12, 3.0, 0],
                                    [m.length / 2 + 12, -3.0, 0], [m.length / 2, -0.8, 0]]), 110,
                          ImageDraw.Draw(beam))
        img = Image.composite(img.point(_BEAM_LUT), img, beam)
    canvas.img = img
    canvas.draw = ImageDraw.Draw(canvas.img)
    # poles and posts along the kerbs, behind the vehicle
    for _ in range(int(r.integers(0, 4))):
        y = yl + 0.6 if r.random() < 0.5 else yr - 0.6
        if (canvas.cam.pos[1] > 0) == (y > 0):
            continue  # on the camera's side: drawn as an occluder instead
        x = float(r.uniform(-12, 12))
        hgt = float(r.uniform(1.0, 6.0))
        rgb = np.array(r.choice([[0.4, 0.4, 0.42], [0.2, 0.35, 0.2], [0.6, 0.55, 0.2]])) * lit
        for y0 in (y - 0.1, y + 0.1):
            canvas.world_poly(np.array([[x - 0.1, y0, 0], [x + 0.1, y0, 0], [x + 0.1, y0, hgt], [x - 0.1, y0, hgt]]),
                              rgb)


def _draw_pole(canvas: _Canvas, cam: Camera, pos: np.ndarray, light: Light, r: np.random.Generator, m) -> None:
    """A pole or post between the camera and the vehicle."""
    frac = float(r.uniform(0.3, 0.7))
    base = pos * frac
    right = cam.R[0]
    base = base + right * float(r.uniform(-0.4, 0.4)) * m.length
    width = float(r.uniform(0.1, 0.35))
    hgt = pos[2] + 3.0
    rgb = np.array(r.choice([[0.45, 0.45, 0.47], [0.25, 0.3, 0.25], [0.7, 0.7, 0.68]]))
    rgb = rgb * (light.ambient + light.sun_rgb * 0.6)
    a = base - right * width / 2
    b = base + right * width / 2
    canvas.world_poly(np.array([[a[0], a[1], 0], [b[0], b[1], 0], [b[0], b[1], hgt], [a[0], a[1], hgt]]), rgb)


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    """Fixed encoder settings so that the same image always gives the same bytes."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality), optimize=False, progressive=False, subsampling=2)
    return buf.getvalue()
