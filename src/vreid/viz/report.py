"""A self-contained HTML report: metrics table, CMC curve (inline SVG), ranked galleries of a few queries and, for a
method that has them, its attention maps drawn over those queries."""
from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from vreid.data.records import ImageRecord
from vreid.fileio import write_text_atomic
from vreid.viz.table import result_columns, verification_columns


def thumbnail_data_uri(path: str, height: int = 96) -> str:
    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((height * 2, height))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _jpeg_data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


#: the colour attention is drawn in, and how opaque it is where a map is at its maximum
ATTENTION_RGB = np.array([255.0, 40.0, 0.0])
ATTENTION_ALPHA = 0.65


def attention_overlays(path: str, maps: np.ndarray, height: int = 96) -> list[str]:
    """One JPEG data URI per map of `maps` (M, h, w): the image with the map, upsampled to it (bilinear), drawn in
    red over it. Maps are scaled by the largest value of all M, so that they compare with each other."""
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3 or (maps < 0).any():
        raise ValueError(f"attention maps must be non-negative (M, h, w), got shape {maps.shape}")
    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((height * 2, height))
        base = np.asarray(im, dtype=np.float32)
    scale = max(float(maps.max()), 1e-12)
    out = []
    for m in maps:
        heat = Image.fromarray(np.uint8(np.round(255 * m / scale)), mode="L").resize(im.size, Image.BILINEAR)
        alpha = ATTENTION_ALPHA * np.asarray(heat, dtype=np.float32)[..., None] / 255.0
        blended = base * (1 - alpha) + ATTENTION_RGB * alpha
        out.append(_jpeg_data_uri(Image.fromarray(np.uint8(np.clip(np.round(blended), 0, 255)))))
    return out


def attention_section(attention: Sequence[tuple[int, np.ndarray]], query: Sequence[ImageRecord],
                      caption: str = "") -> str:
    """The "Attention maps" section: per query, the image, then each of its maps drawn over it; "" if none."""
    if not attention:
        return ""
    rows = []
    for qi, maps in attention:
        q = query[qi]
        cells = [f'<figure class="query"><img src="{thumbnail_data_uri(q.path)}"><figcaption>query id '
                 f'{q.vehicle_id} cam {q.camera_id}</figcaption></figure>']
        cells += [f'<figure class="attention"><img src="{uri}"><figcaption>map {m}</figcaption></figure>'
                  for m, uri in enumerate(attention_overlays(q.path, maps), 1)]
        rows.append('<div class="row">' + "".join(cells) + "</div>")
    count = len(attention[0][1])
    return (f"<h2>Attention maps</h2><p>{count} maps per query, drawn in red over the image (scaled by the "
            f"largest value of the query's maps). {html.escape(caption)}</p>" + "".join(rows))


def file_data_uri(path: str | Path, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def line_chart_svg(series: Mapping[str, Sequence[tuple[float, float]]], x_ticks: Sequence[tuple[float, str]],
                   x_label: str, width: int = 420, height: int = 260) -> str:
    """Line chart with a 0-100 % y axis; point and tick x values are fractions of the plot's width."""
    pad = 40
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    x = lambda f: pad + f * (width - 2 * pad)  # noqa: E731
    y = lambda v: height - pad - v * (height - 2 * pad)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="11">',
             f'<rect x="{pad}" y="{pad}" width="{width - 2 * pad}" height="{height - 2 * pad}" fill="none" stroke="#999"/>']
    for v in (0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<text x="{pad - 30}" y="{y(v) + 4:.1f}">{int(v * 100)}%</text>')
    for f, label in x_ticks:
        parts.append(f'<text x="{x(f) - 4:.1f}" y="{height - pad + 15}">{html.escape(label)}</text>')
    parts.append(f'<text x="{width / 2 - 15}" y="{height - 5}">{html.escape(x_label)}</text>')
    for i, (name, points) in enumerate(series.items()):
        pts = " ".join(f"{x(f):.1f},{y(float(v)):.1f}" for f, v in points)
        color = colors[i % len(colors)]
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        parts.append(f'<text x="{pad + 8}" y="{pad + 14 + 14 * i}" fill="{color}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def cmc_svg(curves: Mapping[str, Sequence[float]], max_rank: int = 20, width: int = 420, height: int = 260) -> str:
    """Line chart of CMC curves (fractions) for ranks 1..max_rank."""
    at = lambda r: (r - 1) / max(max_rank - 1, 1)  # noqa: E731
    series = {name: [(at(r + 1), v) for r, v in enumerate(list(curve)[:max_rank])] for name, curve in curves.items()}
    ticks = [(at(r), str(r)) for r in (1, 5, 10, 15, 20) if r <= max_rank]
    return line_chart_svg(series, ticks, "rank", width, height)


def roc_svg(curves: Mapping[str, Mapping[str, Sequence[float]]], min_fpr: float = 1e-6, width: int = 420,
            height: int = 260) -> str:
    """ROC curves (results.json `roc_curve`: {"fpr": [...], "tpr": [...]}) with FPR on a log axis from min_fpr to 1."""
    decades = -math.log10(min_fpr)
    at = lambda f: 1 + math.log10(f) / decades  # noqa: E731
    series = {name: [(at(f), t) for f, t in zip(c["fpr"], c["tpr"]) if f >= min_fpr] for name, c in curves.items()}
    ticks = [(at(10.0 ** -e), f"1e-{e}") for e in range(int(decades), 0, -1)] + [(1.0, "1")]
    return line_chart_svg(series, ticks, "FPR", width, height)


def ranked_gallery(qf: np.ndarray, gf: np.ndarray, query: Sequence[ImageRecord], gallery: Sequence[ImageRecord],
                   query_indices: Sequence[int], k: int = 10, drop_same_camera: bool = True) -> list[tuple[int, list[int]]]:
    """Top-k gallery indices for a few queries (Euclidean), leaving out same-id same-camera junk."""
    g_ids = np.array([r.vehicle_id for r in gallery])
    g_cams = np.array([r.camera_id for r in gallery])
    out = []
    for qi in query_indices:
        d = ((gf - qf[qi]) ** 2).sum(1)
        if drop_same_camera:
            d = np.where((g_ids == query[qi].vehicle_id) & (g_cams == query[qi].camera_id), np.inf, d)
        order = np.argsort(d, kind="stable")[:k]
        out.append((qi, [int(j) for j in order if np.isfinite(d[j])]))
    return out


def ranked_from_lists(indices: np.ndarray, query: Sequence[ImageRecord], gallery: Sequence[ImageRecord],
                      query_indices: Sequence[int], drop_same_camera: bool = True) -> list[tuple[int, list[int]]]:
    """The rows of `ranked_gallery` from stored top-k lists (ranked.npz `indices`, Q x k), junk left out alike."""
    def junk(q: ImageRecord, g: ImageRecord) -> bool:
        return drop_same_camera and g.vehicle_id == q.vehicle_id and g.camera_id == q.camera_id

    return [(qi, [int(j) for j in indices[qi] if not junk(query[qi], gallery[j])]) for qi in query_indices]


def pick_queries(num_queries: int, count: int, seed: int = 0) -> list[int]:
    """`count` query indices drawn without replacement (all of them if fewer), in order."""
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(num_queries, size=min(count, num_queries), replace=False).tolist())


def write_report(path: str | Path, title: str, results: Mapping[str, Mapping[str, Any]],
                 cmc_curves: Mapping[str, Sequence[float]], ranked: Sequence[tuple[int, list[int]]],
                 query: Sequence[ImageRecord], gallery: Sequence[ImageRecord], notes: Sequence[str] = (),
                 figures: Sequence[tuple[str, str, str | Path]] = (),
                 attention: Sequence[tuple[int, np.ndarray]] = (), attention_caption: str = "") -> Path:
    """`figures`: (title, caption, PNG file) panels a method wrote next to the run (SAVER's residuals.png).
    `attention`: (query index, maps (M, h, w)) of a method with attention maps (ReidMethod.attention_maps); without
    them the report has no attention section."""
    columns = [*result_columns(results.values()), *verification_columns(results.values())]
    rows = "".join(
        "<tr><td>" + html.escape(name) + "</td>" +
        "".join(f"<td>{100 * r[k]:.2f}</td>" if r.get(k) is not None else "<td>-</td>" for k, _ in columns)
        + "</tr>" for name, r in results.items()
    )
    header = "".join(f"<th>{label}</th>" for _, label in columns)
    roc_curves = {name: r["roc_curve"] for name, r in results.items() if r.get("roc_curve")}
    roc_html = (f"<h2>ROC</h2><p>Verification of (query, gallery) pairs after junk removal: TPR at the best "
                f"threshold whose FPR is at most each value.</p>{roc_svg(roc_curves)}" if roc_curves else "")
    lists = []
    for qi, gidx in ranked:
        q = query[qi]
        cells = [f'<figure class="query"><img src="{thumbnail_data_uri(q.path)}"><figcaption>query id {q.vehicle_id}'
                 f' cam {q.camera_id}</figcaption></figure>']
        for rank, j in enumerate(gidx, 1):
            g = gallery[j]
            ok = g.vehicle_id == q.vehicle_id
            cells.append(f'<figure class="{"hit" if ok else "miss"}"><img src="{thumbnail_data_uri(g.path)}">'
                         f'<figcaption>#{rank} id {g.vehicle_id} cam {g.camera_id}</figcaption></figure>')
        lists.append('<div class="row">' + "".join(cells) + "</div>")
    figures_html = "".join(f"<h2>{html.escape(title)}</h2><p>{html.escape(caption)}</p>"
                           f'<img class="panel" src="{file_data_uri(png)}">' for title, caption, png in figures)
    notes_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
td:first-child {{ text-align: left; }}
.row {{ display: flex; flex-wrap: wrap; gap: 6px; margin: 8px 0; align-items: flex-start; }}
figure {{ margin: 0; padding: 3px; border: 4px solid transparent; font-size: 10px; text-align: center; }}
figure img {{ height: 96px; display: block; }}
figure.query {{ border-color: #333; margin-right: 14px; }}
img.panel {{ image-rendering: pixelated; width: 384px; }}
figure.hit {{ border-color: #2a2; }} figure.miss {{ border-color: #d22; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<ul>{notes_html}</ul>
<h2>Metrics (%)</h2><table><tr><th></th>{header}</tr>{rows}</table>
<h2>CMC</h2>{cmc_svg(cmc_curves)}
{roc_html}
{figures_html}
{attention_section(attention, query, attention_caption)}
<h2>Ranked gallery</h2><p>Query on the left (black); matches framed green, wrong vehicles red. Same-camera images of
the query's vehicle are left out where the protocol removes them (its junk rule is in the notes above).</p>
{"".join(lists)}
</body></html>"""
    write_text_atomic(path, doc)
    return Path(path)
