"""3D bodies of the synthetic vehicles: convex prisms (body, cabin, wheels, cargo box) carrying flat decals.

Vehicle frame: x forward, y to the vehicle's left, z up, origin on the ground under the centre; metres.
Every part is convex, so back-face culling removes its hidden faces; parts are ordered against each other by
separating planes (see `part_order`), which makes the painter's algorithm exact for these bodies.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vreid.synth.catalog import Identity

# materials
PAINT, GLASS, MATTE, METAL, HEADLIGHT, TAILLIGHT, RUBBER = range(7)


@dataclass
class Part:
    name: str
    faces: list = field(default_factory=list)      # (verts (n,3), normal (3,), rgb, material, face name)
    decals: dict = field(default_factory=dict)     # face index -> list of (verts, rgb, material)
    # (other part name, plane point, plane normal): this part lies on the normal's side of the plane
    above: list = field(default_factory=list)

    def face_index(self, name: str) -> int:
        for i, f in enumerate(self.faces):
            if f[4] == name:
                return i
        raise KeyError(name)


class Prism:
    """A convex prism: a convex (x, z) profile extruded across y between y_lo(z) and y_hi(z) (linear in z)."""

    def __init__(self, profile, names, y_hi=(1.0, 0.0), y_lo=None):
        self.p = np.asarray(profile, dtype=float)
        if _signed_area(self.p) < 0:  # keep counter-clockwise (x right, z up)
            raise ValueError("profile must be counter-clockwise")
        self.names = names
        self.hi = y_hi                       # y = a + b z
        self.lo = y_lo if y_lo is not None else (-y_hi[0], -y_hi[1])

    def y(self, z, side: int):
        a, b = self.hi if side > 0 else self.lo
        return a + b * z

    def point(self, x, z, side: int, off: float = 0.0):
        """3D point on a side face (side +1: y_hi, -1: y_lo), pushed `off` metres outwards."""
        return np.array([x, self.y(z, side) + side * off, z])

    def edge_point(self, k: int, t: float, s: float, off: float = 0.0):
        """3D point on the face of profile edge k: t in 0..1 along the edge, s in -1..1 across (lo..hi)."""
        p0, p1 = self.p[k], self.p[(k + 1) % len(self.p)]
        xz = p0 + t * (p1 - p0)
        d = p1 - p0
        n = np.array([d[1], -d[0]]) / (np.hypot(*d) + 1e-12)  # outward for a ccw profile
        xz = xz + off * n
        lo, hi = self.y(xz[1], -1), self.y(xz[1], 1)
        return np.array([xz[0], lo + (s + 1) / 2 * (hi - lo), xz[1]])

    def to_part(self, name: str, rgb, material=PAINT, face_rgb=None) -> Part:
        part = Part(name)
        n = len(self.p)
        centre = np.array([self.p[:, 0].mean(), (self.y(self.p[:, 1].mean(), 1) + self.y(self.p[:, 1].mean(), -1)) / 2,
                           self.p[:, 1].mean()])
        for side, fname in ((1, "left"), (-1, "right")):
            v = np.array([self.point(x, z, side) for x, z in self.p])
            part.faces.append(_face(v, centre, rgb, material, fname))
        for k in range(n):
            v = np.array([self.edge_point(k, 0, -1), self.edge_point(k, 1, -1), self.edge_point(k, 1, 1),
                          self.edge_point(k, 0, 1)])
            c, m = (face_rgb or {}).get(self.names[k], (rgb, material))
            part.faces.append(_face(v, centre, c, m, self.names[k]))
        return part


def _signed_area(p) -> float:
    x, z = p[:, 0], p[:, 1]
    return 0.5 * float(np.sum(x * np.roll(z, -1) - np.roll(x, -1) * z))


def _face(v, centre, rgb, material, name):
    n = np.cross(v[1] - v[0], v[2] - v[0])
    if np.linalg.norm(n) < 1e-12:
        n = np.cross(v[2] - v[0], v[3] - v[0]) if len(v) > 3 else np.array([0.0, 0.0, 1.0])
    n = n / (np.linalg.norm(n) + 1e-12)
    if np.dot(n, v.mean(0) - centre) < 0:
        n = -n
    return (v, n, tuple(rgb), material, name)


def _circle(n: int, r: float, cx: float, cz: float, phase: float = 0.0):
    a = np.linspace(0, 2 * np.pi, n, endpoint=False) + phase
    return np.stack([cx + r * np.cos(a), cz + r * np.sin(a)], 1)


def _add(part: Part, face: str, verts, rgb, material=MATTE):
    part.decals.setdefault(part.face_index(face), []).append((np.asarray(verts, dtype=float), tuple(rgb), material))


def _side_poly(prism: Prism, part: Part, xz, rgb, material=MATTE, sides=(1, -1), off=0.004, mirror=True):
    for s in sides:
        xz_s = xz
        _add(part, "left" if s > 0 else "right", [prism.point(x, z, s, off) for x, z in xz_s], rgb, material)


def _edge_rect(prism: Prism, part: Part, k: int, t0, t1, s0, s1, rgb, material=MATTE, off=0.004):
    v = [prism.edge_point(k, t0, s0, off), prism.edge_point(k, t1, s0, off), prism.edge_point(k, t1, s1, off),
         prism.edge_point(k, t0, s1, off)]
    _add(part, prism.names[k], v, rgb, material)


_GLYPHS: dict[str, list] = {}


def _glyph(ch: str) -> list:
    """A 3x5 cell pattern per character (fixed pseudo-font: only its difference between characters matters)."""
    if ch not in _GLYPHS:
        r = np.random.default_rng(ord(ch))
        cells = r.random((5, 3)) < 0.55
        cells[0, 1] = cells[4, 1] = True
        _GLYPHS[ch] = [(i, j) for i in range(5) for j in range(3) if cells[i, j]]
    return _GLYPHS[ch]


def _plate(prism: Prism, part: Part, k: int, ident: Identity, t_mid: float, s_mid: float, t_half: float,
           s_half: float):
    """Licence plate on edge face k, with its text as cells of a tiny font (t: along the edge = vertical)."""
    bg, ink = [((0.1, 0.25, 0.75), (0.95, 0.95, 0.95)), ((0.95, 0.8, 0.1), (0.05, 0.05, 0.05)),
               ((0.93, 0.93, 0.93), (0.05, 0.05, 0.05))][ident.plate_style]
    _edge_rect(prism, part, k, t_mid - t_half, t_mid + t_half, s_mid - s_half, s_mid + s_half, bg, MATTE, 0.006)
    if not ident.plate_drawn:
        return
    n = len(ident.plate)
    cw = 2 * s_half * 0.86 / n
    for ci, ch in enumerate(ident.plate):
        # s runs from the right of the vehicle (-1) to its left (+1): read the plate in the right order
        s_left = s_mid + s_half * 0.86 - ci * cw
        for (i, j) in _glyph(ch):
            t0 = t_mid + t_half * 0.7 - (i + 1) * (1.4 * t_half / 5)
            s0 = s_left - (j + 1) * cw / 4
            _edge_rect(prism, part, k, t0, t0 + 1.4 * t_half / 5, s0, s0 + cw / 4, ink, MATTE, 0.008)


def _wheels(m, ident: Identity, w: float, parts: list):
    r = m.wheel_radius
    xf, xr = m.wheelbase * m.length / 2, -m.wheelbase * m.length / 2
    if m.type_name == "bus":
        xf, xr = m.length / 2 - 2.2, -m.length / 2 + 3.0
    rubber = (0.05, 0.05, 0.05)
    tyre_w = 0.22 if m.type_name not in ("bus", "truck") else 0.3
    for x, xname in ((xf, "front"), (xr, "rear")):
        for side in (1, -1):
            y_out, y_in = side * (w / 2 + 0.01), side * (w / 2 - tyre_w)
            hi, lo = ((y_out, 0.0), (y_in, 0.0)) if side > 0 else ((y_in, 0.0), (y_out, 0.0))
            wheel = Prism(_circle(10, r, x, r, np.pi / 10), [f"tread{i}" for i in range(10)], hi, lo)
            name = f"wheel_{xname}_{'l' if side > 0 else 'r'}"
            part = wheel.to_part(name, rubber, RUBBER)
            outer = "left" if side > 0 else "right"
            rim_r = r * (0.62 if ident.rim_style != 2 else 0.72)
            _add(part, outer, [wheel.point(px, pz, side, 0.004) for px, pz in _circle(10, rim_r, x, r)],
                 ident.rim_rgb, METAL)
            spokes = (5, 6, 0, 10)[ident.rim_style]
            for si in range(spokes):
                a = 2 * np.pi * si / spokes
                ca, sa = np.cos(a), np.sin(a)
                pts = [(x + 0.1 * rim_r * ca - 0.1 * rim_r * sa, r + 0.1 * rim_r * sa + 0.1 * rim_r * ca),
                       (x + 0.9 * rim_r * ca - 0.12 * rim_r * sa, r + 0.9 * rim_r * sa + 0.12 * rim_r * ca),
                       (x + 0.9 * rim_r * ca + 0.12 * rim_r * sa, r + 0.9 * rim_r * sa - 0.12 * rim_r * ca)]
                _add(part, outer, [wheel.point(px, pz, side, 0.008) for px, pz in pts], (0.12, 0.12, 0.13), MATTE)
            _add(part, outer, [wheel.point(px, pz, side, 0.01) for px, pz in _circle(6, 0.18 * rim_r, x, r)],
                 (0.2, 0.2, 0.22), METAL)
            part.above.append(("body", np.array([0.0, side * (w / 2 - 0.05), 0.0]), np.array([0.0, side, 0.0])))
            parts.append(part)
    # near-side front wheel covers the rear wheel from the front and vice versa
    for side in ("l", "r"):
        f = next(p for p in parts if p.name == f"wheel_front_{side}")
        f.above.append((f"wheel_rear_{side}", np.zeros(3), np.array([1.0, 0.0, 0.0])))


def build_vehicle(ident: Identity) -> list[Part]:
    """All parts of one identity, with its details as decals. Depends on the identity only (cache it)."""
    m = ident.model
    t = m.type_name
    L, W, H = m.length, m.width, m.height
    paint = ident.paint
    dark = (0.05, 0.05, 0.06)
    bumper = dark if m.bumper_black else tuple(c * 0.92 for c in paint)
    glass = tuple(np.array([0.16, 0.2, 0.24]) * (1.0 - 0.75 * ident.tint))
    c, belt = m.clearance, m.belt
    parts: list[Part] = []
    # lower body: bottom, front, nose, top, tail, rear (counter-clockwise with x right, z up)
    zf = c + (belt - c) * 0.72
    zr = c + (belt - c) * 0.78
    prof = [(-L / 2, c), (L / 2, c), (L / 2, zf), (L / 2 - m.nose, belt), (-L / 2 + m.tail, belt), (-L / 2, zr)]
    names = ["bottom", "front", "nose", "top", "tail", "rear"]
    body = Prism(prof, names, (W / 2, 0.0))
    bpart = body.to_part("body", paint, PAINT, {"bottom": (dark, RUBBER)})
    parts.append(bpart)
    # cabin (a trapezoid profile, narrower at the roof)
    xf, xr = m.cabin_front * L, m.cabin_rear * L
    if t == "truck":
        xf, xr = L / 2 - 0.05, L / 2 - 2.0
    top_f, top_r = xf - m.rake_front, xr + m.rake_rear
    cab_h = H if t != "truck" else H * 0.82
    wb = W / 2 - 0.04
    th = m.tumblehome
    slope = -th / max(cab_h - belt, 0.1)
    cab = Prism([(xr, belt), (xf, belt), (top_f, cab_h), (top_r, cab_h)], ["floor", "windshield", "roof", "backlight"],
                (wb - slope * belt, slope))
    roof_rgb = dark if ident.black_roof else paint
    cpart = cab.to_part("cabin", paint, PAINT, {"windshield": (glass, GLASS), "backlight": (glass, GLASS),
                                                "roof": (roof_rgb, PAINT), "floor": (dark, RUBBER)})
    cpart.above.append(("body", np.array([0.0, 0.0, belt]), np.array([0.0, 0.0, 1.0])))
    parts.append(cpart)
    # side windows: inset of the cabin side, split by pillars
    inset = 0.07
    z0, z1 = belt + inset * 0.8, cab_h - (inset if t != "bus" else 0.4)
    def x_front(z):  # noqa: E306 - along the windshield line
        return xf + (top_f - xf) * (z - belt) / (cab_h - belt) - inset
    def x_rear(z):  # noqa: E306
        return xr + (top_r - xr) * (z - belt) / (cab_h - belt) + inset
    n_win = 2 if t in ("sedan", "hatchback", "suv", "pickup", "estate") else 3
    if t == "pickup" and m.cabin_rear > -0.1:
        n_win = 2
    if t in ("bus",):
        n_win = 6
    if t in ("truck",):
        n_win = 1
    xs = np.linspace(0, 1, n_win + 1)
    pillar = 0.06 if t != "bus" else 0.1
    for i in range(n_win):
        if t == "van" and i == 0:
            continue  # panel van: no window over the cargo space
        a, b = xs[i], xs[i + 1]
        poly = []
        for z in (z0, z1):
            xa = x_rear(z) + a * (x_front(z) - x_rear(z)) + (pillar if i > 0 else 0)
            xb = x_rear(z) + b * (x_front(z) - x_rear(z)) - (pillar if i < n_win - 1 else 0)
            poly.append((xa, z)), poly.append((xb, z))
        poly = [poly[0], poly[1], poly[3], poly[2]]
        _side_poly(cab, cpart, poly, glass, GLASS)
    # windshield details: stickers (China-style inspection stickers), ornament, frame
    k_ws = 1
    for (u, v, w, h, rgb) in ident.stickers:
        _edge_rect(cab, cpart, k_ws, v, min(0.97, v + h), 2 * u - 1, min(0.97, 2 * (u + w) - 1), rgb, MATTE)
    if ident.ornament:
        _edge_rect(cab, cpart, k_ws, 0.55, 0.7, -0.05, 0.05, (0.85, 0.15, 0.1), MATTE)
    for (u, v, w, h, rgb) in ident.rear_stickers:
        _edge_rect(cab, cpart, 3, v, min(0.95, v + h), 2 * u - 1, min(0.95, 2 * (u + w) - 1), rgb, MATTE)
    if ident.sunroof:
        _edge_rect(cab, cpart, 2, 0.15, 0.45, -0.55, 0.55, (0.04, 0.05, 0.07), GLASS)
    # front face (edge 1): headlights, grille, plate, bumper
    hw, hh, hgap, hshape = m.headlight
    fh = zf - c  # face height
    def t_of(z):  # noqa: E306 - z on the front face -> t
        return (z - c) / fh
    _edge_rect(body, bpart, 1, 0.0, t_of(c + min(0.25, fh * 0.35)), -1, 1, bumper, MATTE)
    hz0, hz1 = zf - 0.03 - hh, zf - 0.03
    for s in (-1, 1):
        s_out, s_in = s * (1 - 2 * hgap), s * (1 - 2 * hgap - 2 * hw)
        lo, hi = min(s_out, s_in), max(s_out, s_in)
        if hshape == 2:
            mid = (lo + hi) / 2
            _edge_rect(body, bpart, 1, t_of(hz0), t_of(hz1), lo, mid - 0.01, (0.85, 0.86, 0.8), HEADLIGHT)
            _edge_rect(body, bpart, 1, t_of(hz0), t_of(hz1), mid + 0.01, hi, (0.85, 0.86, 0.8), HEADLIGHT)
        else:
            _edge_rect(body, bpart, 1, t_of(hz0 + (0.04 if hshape == 1 else 0)), t_of(hz1), lo, hi,
                       (0.85, 0.86, 0.8), HEADLIGHT)
    gw, gh, gstyle = m.grille
    gz1 = hz1 - 0.02
    gz0 = max(c + 0.05, gz1 - gh)
    grille_rgb = (0.08, 0.08, 0.09) if gstyle != 2 else (0.35, 0.35, 0.37)
    if gstyle == 1:
        _edge_rect(body, bpart, 1, t_of(gz0), t_of(gz1), -gw, -0.04, grille_rgb, METAL)
        _edge_rect(body, bpart, 1, t_of(gz0), t_of(gz1), 0.04, gw, grille_rgb, METAL)
    else:
        _edge_rect(body, bpart, 1, t_of(gz0), t_of(gz1), -gw, gw, grille_rgb, METAL)
    plate_th = 0.07 / fh
    plate_s = 0.25 / (W / 2)
    _plate(body, bpart, 1, ident, t_of(c + min(0.3, fh * 0.45)) * 0.8, 0.0, plate_th, plate_s)
    # rear face (edge 5, from z=zr down to c): taillights, plate, bumper
    rh = zr - c
    def tr(z):  # noqa: E306
        return (zr - z) / rh
    tw, th_, tshape = m.taillight
    _edge_rect(body, bpart, 5, tr(c + min(0.25, rh * 0.3)), 1.0, -1, 1, bumper, MATTE)
    tz1 = zr - 0.03
    tz0 = tz1 - th_ * (1.8 if tshape == 1 else 1.0)
    if tshape == 2:
        _edge_rect(body, bpart, 5, tr(tz1), tr(tz0 + th_ * 0.5), -0.95, 0.95, (0.55, 0.05, 0.05), TAILLIGHT)
    for s in (-1, 1):
        a, b = s * 0.96, s * (0.96 - 2 * tw)
        _edge_rect(body, bpart, 5, tr(tz1), tr(tz0), min(a, b), max(a, b), (0.6, 0.06, 0.06), TAILLIGHT)
    _plate(body, bpart, 5, ident, 0.55, 0.0, 0.07 / rh, plate_s)
    if ident.spare_wheel:
        _add(bpart, "rear", [body.edge_point(5, tt, ss, 0.01) for tt, ss in
                             [(0.15 + 0.3 * (1 + np.sin(a)) / 2, 0.6 * np.cos(a) * 0.35)
                              for a in np.linspace(0, 2 * np.pi, 10, endpoint=False)]], (0.05, 0.05, 0.05), RUBBER)
    # sides of the body: door lines, side decals, dents, dirt, mirrors
    for dx in ([0.05 * L, -0.2 * L] if t not in ("bus", "truck") else []):
        _side_poly(body, bpart, [(dx, c + 0.08), (dx + 0.012, c + 0.08), (dx + 0.012, belt - 0.03),
                                 (dx, belt - 0.03)], tuple(np.array(paint) * 0.5), MATTE)
    for (side, x0, x1, za, zb, rgb) in ident.side_decals:
        _side_poly(body, bpart, [(x0, za), (x1, za), (x1, zb), (x0, zb)], rgb, MATTE, sides=(side,), off=0.006)
    for (side, x, z, rad, dark_f) in ident.dents:
        pts = _circle(7, rad, x, min(max(z, c + rad), belt - rad))
        _side_poly(body, bpart, pts, tuple(np.array(paint) * (1 - dark_f)), MATTE, sides=(side,), off=0.005)
    if ident.dirt > 0:
        dirt = (0.33, 0.27, 0.2)
        zt = c + (belt - c) * 0.35 * ident.dirt
        xs_d = np.linspace(-L / 2 + 0.05, L / 2 - 0.05, 7)
        top = [(x, zt + 0.05 * np.sin(3 * x)) for x in xs_d[::-1]]
        _side_poly(body, bpart, [(-L / 2 + 0.05, c + 0.01), (L / 2 - 0.05, c + 0.01)] + top, dirt, MATTE, off=0.005)
    if t == "pickup":  # the open bed, seen from above
        _edge_rect(body, bpart, 3, (L / 2 - m.nose - (xr - 0.05)) / (L - m.nose - m.tail), 0.97, -0.9, 0.9,
                   (0.1, 0.1, 0.1), MATTE)
    if t == "bus":
        _side_poly(body, bpart, [(L / 2 - 1.2, c + 0.1), (L / 2 - 0.3, c + 0.1), (L / 2 - 0.3, belt),
                                 (L / 2 - 1.2, belt)], glass, GLASS, sides=(-1,))
    if t == "truck":  # cargo box behind the cab
        cx0, cx1 = -L / 2 + 0.05, xr - 0.2
        box = Prism([(cx0, belt), (cx1, belt), (cx1, H), (cx0, H)], ["floor", "front", "top", "back"], (W / 2, 0.0))
        cargo_rgb = (0.85, 0.85, 0.83) if ident.vehicle_id % 3 else tuple(np.array(paint) * 0.9)
        kpart = box.to_part("cargo", cargo_rgb, PAINT)
        kpart.above.append(("body", np.array([0.0, 0.0, belt]), np.array([0.0, 0.0, 1.0])))
        kpart.above.append(("cabin", np.array([cx1 + 0.1, 0.0, 0.0]), np.array([-1.0, 0.0, 0.0])))
        for (side, x0, x1, za, zb, rgb) in ident.side_decals:
            _side_poly(box, kpart, [(cx0 + 0.5, belt + 0.5), (cx0 + 2.0, belt + 0.5), (cx0 + 2.0, belt + 1.2),
                                    (cx0 + 0.5, belt + 1.2)], rgb, MATTE, sides=(side,))
        parts.append(kpart)
    _wheels(m, ident, W, parts)
    if ident.roof_rack:
        for s in (-1, 1):
            y0 = s * (wb - th - 0.12)
            rail = Prism([(top_r + 0.1, cab_h), (top_f - 0.15, cab_h), (top_f - 0.15, cab_h + 0.06),
                          (top_r + 0.1, cab_h + 0.06)], ["under", "front", "top", "back"],
                         (y0 + 0.03, 0.0), (y0 - 0.03, 0.0))
            rp = rail.to_part(f"rack_{s}", (0.1, 0.1, 0.1), METAL)
            rp.above.append(("cabin", np.array([0.0, 0.0, cab_h]), np.array([0.0, 0.0, 1.0])))
            parts.append(rp)
    return parts


def part_order(parts: list[Part], cam: np.ndarray, centres: np.ndarray | None = None) -> list[int]:
    """Painter's order (far first) from separating planes, ties broken by centroid distance."""
    names = {p.name: i for i, p in enumerate(parts)}
    before: list[set] = [set() for _ in parts]  # before[i]: parts drawn before i
    for i, p in enumerate(parts):
        for other, q, n in p.above:
            j = names.get(other)
            if j is None:
                continue
            if np.dot(cam - q, n) > 0:
                before[i].add(j)   # camera on this part's side: this part is nearer
            else:
                before[j].add(i)
    if centres is None:
        centres = np.array([np.concatenate([f[0] for f in p.faces]).mean(0) for p in parts])
    dist = np.linalg.norm(centres - cam, axis=1).tolist()
    order, done = [], set()
    while len(order) < len(parts):
        ready = [i for i in range(len(parts)) if i not in done and before[i] <= done]
        if not ready:  # a cycle (should not happen); fall back to distance
            ready = [i for i in range(len(parts)) if i not in done]
        i = max(ready, key=lambda k: dist[k])
        order.append(i)
        done.add(i)
    return order
