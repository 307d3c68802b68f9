"""Your own cameras ("plain" protocol): train.csv, query.csv, gallery.csv with path,vehicle_id,camera_id[,timestamp]."""
from __future__ import annotations

import csv
import io

from vreid.data.layouts.base import Layout, ParseContext, parse_float, parse_int
from vreid.data.records import ImageRecord, ReidDataset

REQUIRED_COLUMNS = ("path", "vehicle_id", "camera_id")
OPTIONAL_COLUMNS = ("timestamp",)


def read_split_csv(ctx: ParseContext, rel: str) -> list[ImageRecord]:
    """Records of one split file; a missing file is an empty split, a file with a header and no rows a problem."""
    p = ctx.path(rel)
    if not p.is_file():
        return []
    reader = csv.reader(io.StringIO(p.read_bytes().decode("utf-8-sig", errors="replace")))
    header = [h.strip() for h in next(reader, [])]
    fix_header = f"first line must be {','.join(REQUIRED_COLUMNS)}[,timestamp]"
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        ctx.problem(rel, f"header lacks column(s) {', '.join(missing)} (got {','.join(header) or 'nothing'})",
                    fix_header, line=1)
        return []
    col = {name: header.index(name) for name in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if name in header}
    records = []
    for lineno, row in enumerate(reader, start=2):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            ctx.problem(rel, f"expected {len(header)} fields, got {len(row)}", fix_header, line=lineno)
            continue
        path = row[col["path"]].strip()
        vid, cam = parse_int(row[col["vehicle_id"]].strip()), parse_int(row[col["camera_id"]].strip())
        ts_text = row[col["timestamp"]].strip() if "timestamp" in col else ""
        ts = parse_float(ts_text) if ts_text else None
        if not path or vid is None or cam is None or cam < 0 or (ts_text and ts is None):
            ctx.problem(rel, f"malformed line {','.join(row)!r}", "path, integer vehicle_id, integer camera_id >= 0, "
                        "numeric timestamp (or empty)", line=lineno)
            continue
        records.append(ImageRecord(path=ctx.image(path, rel, lineno), vehicle_id=vid, camera_id=cam, timestamp=ts))
    if not records and not any(pr.file == rel for pr in ctx.problems):
        ctx.problem(rel, "split file has no images", "add rows, or delete the file if the split is not needed")
    return records


class FolderLayout(Layout):
    name = "folder"
    protocol = "plain"
    # any split may be absent; a present but empty file is reported by read_split_csv
    required_splits = ()

    def list_file(self, split: str, test_size: int | None) -> str:
        return f"{split}.csv"

    def parse(self, ctx: ParseContext, test_size: int | None) -> ReidDataset:
        splits = {s: read_split_csv(ctx, f"{s}.csv") for s in ("train", "query", "gallery")}
        if not any(ctx.path(f"{s}.csv").is_file() for s in splits):
            ctx.problem(str(ctx.root), "no train.csv, query.csv or gallery.csv",
                        "write at least one of them (header path,vehicle_id,camera_id[,timestamp])")
        return self.dataset(ctx, splits["train"], splits["query"], splits["gallery"], test_size)


LAYOUT = FolderLayout()
load = LAYOUT.load
