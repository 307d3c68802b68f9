"""Plot the clustering history of `usl` runs (clusters.csv: clusters and purity per epoch) as a small PNG."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from PIL import Image, ImageDraw

from vreid.fileio import write_bytes_atomic

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]


def read_history(path: str | Path, backbone: int = 0) -> list[dict[str, float]]:
    with open(path) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f) if int(row["backbone"]) == backbone]


def plot_cluster_history(runs: dict[str, str | Path], out: str | Path, width: int = 760, height: int = 300) -> None:
    """Left panel: clusters per epoch (dashed line: true identities); right: purity. One colour per run."""
    hist = {name: read_history(p) for name, p in runs.items()}
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    epochs = max((len(h) for h in hist.values()), default=1)
    true_ids = max((r["true_ids"] for h in hist.values() for r in h), default=1)
    top_clusters = max([true_ids] + [r["clusters"] for h in hist.values() for r in h]) * 1.1
    panels = [("clusters", top_clusters, (50, 30, width // 2 - 20, height - 70)),
              ("purity", 1.0, (width // 2 + 40, 30, width - 20, height - 70))]
    for key, ymax, (x0, y0, x1, y1) in panels:
        d.rectangle((x0, y0, x1, y1), outline="black")
        d.text((x0, y0 - 18), f"{key} per epoch", fill="black")
        for frac in (0, 0.5, 1):
            y = y1 - frac * (y1 - y0)
            d.text((x0 - 40, y - 6), f"{ymax * frac:.2f}" if ymax <= 1 else f"{ymax * frac:.0f}", fill="black")
        for e in range(1, epochs + 1):
            x = x0 + (e - 0.5) / epochs * (x1 - x0)
            d.text((x - 4, y1 + 4), str(e), fill="black")

        def point(e: float, v: float) -> tuple[float, float]:
            return x0 + (e - 0.5) / epochs * (x1 - x0), y1 - min(v / ymax, 1.0) * (y1 - y0)

        if key == "clusters":
            ya = point(1, true_ids)[1]
            for xs in range(int(x0), int(x1), 8):
                d.line((xs, ya, xs + 4, ya), fill=(120, 120, 120))
        for c, (name, h) in enumerate(hist.items()):
            pts = [point(r["epoch"], r[key]) for r in h]
            colour = COLOURS[c % len(COLOURS)]
            if len(pts) > 1:
                d.line(pts, fill=colour, width=2)
            for px, py in pts:
                d.ellipse((px - 2, py - 2, px + 2, py + 2), fill=colour)
    for c, name in enumerate(hist):
        x = 50 + c * ((width - 60) // max(len(hist), 1))
        d.rectangle((x, height - 30, x + 12, height - 20), fill=COLOURS[c % len(COLOURS)])
        d.text((x + 16, height - 32), name, fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    write_bytes_atomic(out, buf.getvalue())
