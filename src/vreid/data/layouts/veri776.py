"""VeRi-776: image_{train,query,test}/, name_{train,query,test}.txt, {train,test}_label.xml (gb2312), and the
optional orientation files keypoint_orient_{train,test}.txt (vreid.data.layouts.veri776_orientation)."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from vreid.data.layouts.base import Layout, ParseContext
from vreid.data.layouts.veri776_orientation import apply_orientations
from vreid.data.records import COLOR_NAMES, TYPE_NAMES, ImageRecord, ReidDataset

#: 0002_c002_00030600_0.jpg -> vehicle 2, camera 2, frame 30600
NAME_PATTERN = re.compile(r"^(\d+)_c(\d+)_(\d+)_\d+\.(?:jpg|jpeg|png)$", re.IGNORECASE)
_XML_DECL = re.compile(rb"^\s*<\?xml[^>]*\?>")


def read_label_xml(ctx: ParseContext, rel: str) -> dict[str, dict]:
    """imageName -> {color_id, type_id} from an official label file; {} (and a problem) if missing or broken.

    The official files declare gb2312; ElementTree rejects that encoding, so the declaration is dropped and
    the bytes decoded here (the content is ASCII in practice).
    """
    p = ctx.path(rel)
    if not p.is_file():
        ctx.problem(rel, "missing label file", f"put the official {rel} under {ctx.root}")
        return {}
    raw = _XML_DECL.sub(b"", p.read_bytes(), count=1)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("gb18030", errors="replace")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        ctx.problem(rel, f"not valid XML: {e}", "replace it with the official file", line=e.position[0])
        return {}
    labels: dict[str, dict] = {}
    for item in root.iter("Item"):
        name = item.get("imageName")
        if not name:
            ctx.problem(rel, "an <Item> has no imageName attribute", "replace it with the official file")
            continue
        values = {}
        for attr, key, names in (("colorID", "color_id", COLOR_NAMES), ("typeID", "type_id", TYPE_NAMES)):
            text_value = item.get(attr)
            if text_value is None:
                continue
            if not text_value.isdigit() or not 1 <= int(text_value) < len(names):
                ctx.problem(rel, f"{name}: {attr}={text_value!r} is not one of 1..{len(names) - 1}",
                            "correct the attribute (see the dataset's list_color.txt / list_type.txt)")
                continue
            values[key] = int(text_value)
        labels[name] = values
    return labels


class VeRi776Layout(Layout):
    name = "veri776"
    protocol = "veri776"

    #: split -> the file that lists its images
    list_files = {"train": "name_train.txt", "query": "name_query.txt", "gallery": "name_test.txt"}

    def list_file(self, split: str, test_size: int | None) -> str:
        return self.list_files[split]

    def parse(self, ctx: ParseContext, test_size: int | None) -> ReidDataset:
        labels = read_label_xml(ctx, "train_label.xml")
        labels.update(read_label_xml(ctx, "test_label.xml"))
        splits = {}
        for split, list_file, folder in (("train", "name_train.txt", "image_train"),
                                         ("query", "name_query.txt", "image_query"),
                                         ("gallery", "name_test.txt", "image_test")):
            splits[split] = self._read_split(ctx, list_file, folder, labels)
        ds = self.dataset(ctx, splits["train"], splits["query"], splits["gallery"], test_size)
        apply_orientations(ds, ctx)
        return ds

    @staticmethod
    def _read_split(ctx: ParseContext, list_file: str, folder: str, labels: dict[str, dict]) -> list[ImageRecord]:
        lines = ctx.lines(list_file)
        if lines is None:
            return []
        records = []
        for lineno, name in lines:
            m = NAME_PATTERN.match(name)
            if m is None:
                ctx.problem(list_file, f"malformed image name {name!r}",
                            "names look like 0002_c002_00030600_0.jpg (vehicle_camera_frame_index)", line=lineno)
                continue
            vid, cam, frame = (int(g) for g in m.groups())
            path = ctx.image(f"{folder}/{name}", list_file, lineno)
            records.append(ImageRecord(path=path, vehicle_id=vid, camera_id=cam, timestamp=float(frame),
                                       **labels.get(name, {})))
        return records


LAYOUT = VeRi776Layout()
load = LAYOUT.load
