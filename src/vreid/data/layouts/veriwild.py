"""VeRi-Wild: images/VVVVV/NNNNNN.jpg, train_test_split/{train_list,test_N,test_N_query,vehicle_info}.txt."""
from __future__ import annotations

import re
from datetime import datetime, timezone

from vreid.data.layouts.base import Layout, ParseContext
from vreid.data.records import COLOR_NAMES, TYPE_NAMES, ImageRecord, ReidDataset

TEST_SIZES = (3000, 5000, 10000)
DEFAULT_TEST_SIZE = 3000
SPLIT_DIR = "train_test_split"
INFO_FILE = f"{SPLIT_DIR}/vehicle_info.txt"

_ENTRY = re.compile(r"^(\d+)/(\d+)(?:\.jpg)?$", re.IGNORECASE)
_TIME = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})[ T](\d{1,2}):(\d{2}):(\d{2})$")

#: words seen in attribute files that are spelled differently from COLOR_NAMES / TYPE_NAMES
COLOR_SYNONYMS = {"grey": "gray", "silver": "gray", "silvery": "gray", "gold": "golden", "champagne": "golden"}
TYPE_SYNONYMS = {
    "pick up": "pickup", "pickup truck": "pickup", "hatch back": "hatchback", "minivan": "mpv",
    "light passenger vehicle": "mpv", "business purpose vehicle": "mpv", "station wagon": "estate",
    "wagon": "estate", "sport utility vehicle": "suv", "coach": "bus", "big bus": "bus", "large bus": "bus",
    "minibus": "van", "mini bus": "van", "heavy truck": "truck", "large truck": "truck", "light truck": "truck",
    "small truck": "truck", "tank car": "truck", "tanker": "truck", "car": "sedan",
}
_EMPTY_WORDS = {"", "unknown", "none", "null", "-", "n/a"}


def word_id(word: str, names: tuple[str, ...], synonyms: dict[str, str]) -> int | None | str:
    """Index of `word` in `names` (after synonyms), None for an empty/unknown marker, the word itself if unknown."""
    w = " ".join(word.lower().replace("_", " ").replace("-", " ").split())
    if w in _EMPTY_WORDS:
        return None
    w = synonyms.get(w, w)
    if w in names:
        return names.index(w)
    compact = w.replace(" ", "")
    return names.index(compact) if compact in names else word


def parse_time(text: str) -> float | None:
    """'YYYY-MM-DD HH:MM:SS' read as UTC -> POSIX seconds (the dataset gives no time zone)."""
    m = _TIME.match(text.strip())
    if m is None:
        return None
    try:
        return datetime(*(int(g) for g in m.groups()), tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def read_vehicle_info(ctx: ParseContext) -> dict[str, tuple[int, float | None, int | None, int | None, int | None]]:
    """'VVVVV/NNNNNN' -> (camera, time, model id, type id, colour id); model ids number the sorted model names."""
    lines = ctx.lines(INFO_FILE, what="vehicle info file")
    if lines is None:
        return {}
    raw: dict[str, tuple] = {}
    unknown: dict[tuple[str, str], list[int]] = {}
    for lineno, text in lines:
        fields = [f.strip() for f in text.split(";")]
        if lineno == 1 and fields and not _ENTRY.match(fields[0]):
            continue  # header: id/image;Camera ID;Time;Model;Type;Color
        if len(fields) != 6 or not _ENTRY.match(fields[0]) or not fields[1].isdigit():
            ctx.problem(INFO_FILE, f"malformed line {text!r}",
                        "each line is VVVVV/NNNNNN;CAMERA;YYYY-MM-DD HH:MM:SS;MODEL;TYPE;COLOR", line=lineno)
            continue
        key, cam, when, model, vtype, color = fields
        timestamp = parse_time(when) if when else None
        if when and timestamp is None:
            ctx.problem(INFO_FILE, f"bad time {when!r}", "write times as YYYY-MM-DD HH:MM:SS", line=lineno)
        type_id = word_id(vtype, TYPE_NAMES, TYPE_SYNONYMS)
        color_id = word_id(color, COLOR_NAMES, COLOR_SYNONYMS)
        if isinstance(type_id, str):
            unknown.setdefault(("type", type_id), []).append(lineno)
            type_id = None
        if isinstance(color_id, str):
            unknown.setdefault(("colour", color_id), []).append(lineno)
            color_id = None
        raw[_ENTRY.match(key).group(1) + "/" + _ENTRY.match(key).group(2)] = (
            int(cam), timestamp, model or None, type_id, color_id)
    for (kind, word), where in unknown.items():
        names = TYPE_NAMES if kind == "type" else COLOR_NAMES
        ctx.problem(INFO_FILE, f"unknown {kind} word {word!r} on {len(where)} line(s)",
                    f"use one of {', '.join(n for n in names if n)} (or add a synonym in "
                    "vreid/data/layouts/veriwild.py)", line=where[0])
    model_ids = {m: i for i, m in enumerate(sorted({v[2] for v in raw.values() if v[2] is not None}))}
    return {k: (cam, t, model_ids.get(m) if m is not None else None, ty, co)
            for k, (cam, t, m, ty, co) in raw.items()}


class VeRiWildLayout(Layout):
    name = "veriwild"
    protocol = "veriwild"

    def list_file(self, split: str, test_size: int | None) -> str:
        size = test_size or DEFAULT_TEST_SIZE
        return f"{SPLIT_DIR}/" + {"train": "train_list.txt", "query": f"test_{size}_query.txt",
                                  "gallery": f"test_{size}.txt"}[split]

    def parse(self, ctx: ParseContext, test_size: int | None) -> ReidDataset:
        test_size = test_size or DEFAULT_TEST_SIZE
        info = read_vehicle_info(ctx)
        train_keys = self._read_keys(ctx, f"{SPLIT_DIR}/train_list.txt")
        test_file, query_file = f"{SPLIT_DIR}/test_{test_size}.txt", f"{SPLIT_DIR}/test_{test_size}_query.txt"
        if not ctx.path(test_file).is_file():
            found = sorted(p.name for p in ctx.path(SPLIT_DIR).glob("test_*.txt")) if ctx.path(SPLIT_DIR).is_dir() \
                else []
            ctx.problem(test_file, f"missing test list for data.test_size={test_size}",
                        f"use a test size whose lists exist ({', '.join(found) or f'official: {TEST_SIZES}'})")
            test_keys, query_keys = [], []
        else:
            test_keys = self._read_keys(ctx, test_file)
            query_keys = self._read_keys(ctx, query_file)
        query_set = {k for k, _, _ in query_keys}
        gallery_keys = [e for e in test_keys if e[0] not in query_set]
        train = self._records(ctx, train_keys, info)
        query = self._records(ctx, query_keys, info)
        gallery = self._records(ctx, gallery_keys, info)
        return self.dataset(ctx, train, query, gallery, test_size)

    @staticmethod
    def _read_keys(ctx: ParseContext, rel: str) -> list[tuple[str, str, int]]:
        """('VVVVV/NNNNNN', list file, line) per image listed in `rel`."""
        lines = ctx.lines(rel)
        if lines is None:
            return []
        out = []
        for lineno, text in lines:
            m = _ENTRY.match(text)
            if m is None:
                ctx.problem(rel, f"malformed line {text!r}", "each line is VVVVV/NNNNNN (vehicle folder/image)",
                            line=lineno)
                continue
            out.append((f"{m.group(1)}/{m.group(2)}", rel, lineno))
        return out

    @staticmethod
    def _records(ctx: ParseContext, keys: list[tuple[str, str, int]], info: dict) -> list[ImageRecord]:
        records, missing = [], []
        for key, rel, lineno in keys:
            entry = info.get(key)
            if entry is None:
                missing.append((key, rel, lineno))
                entry = (0, None, None, None, None)
            cam, t, model, vtype, color = entry
            path = ctx.image(f"images/{key}.jpg", rel, lineno)
            records.append(ImageRecord(path=path, vehicle_id=int(key.split("/")[0]), camera_id=cam, timestamp=t,
                                       color_id=color, type_id=vtype, model_id=model))
        if missing and ctx.path(INFO_FILE).is_file():
            key, rel, lineno = missing[0]
            ctx.problem(rel, f"{len(missing)} listed image(s) have no line in {INFO_FILE} (first: {key})",
                        "use the official vehicle_info.txt, which gives every image's camera", line=lineno)
        return records


LAYOUT = VeRiWildLayout()
load = LAYOUT.load
