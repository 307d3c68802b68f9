"""VehicleID: image/NNNNNNN.jpg, train_test_split/{train_list,test_list_N}.txt, optional attribute/*.txt."""
from __future__ import annotations

from vreid.data.layouts.base import Layout, ParseContext, parse_int
from vreid.data.records import ImageRecord, ReidDataset

TEST_SIZES = (800, 1600, 2400)
DEFAULT_TEST_SIZE = 800


def read_pairs(ctx: ParseContext, rel: str, required: bool, what: str) -> list[tuple[int, str, int]]:
    """(line, first token, integer second token) for files of `NAME INT` lines; malformed lines are problems."""
    lines = ctx.lines(rel, required=required, what=what)
    if lines is None:
        return []
    out = []
    for lineno, text in lines:
        parts = text.split()
        value = parse_int(parts[1]) if len(parts) == 2 else None
        if value is None:
            ctx.problem(rel, f"malformed line {text!r}", "each line is two fields: NAME INTEGER", line=lineno)
            continue
        out.append((lineno, parts[0], value))
    return out


class VehicleIDLayout(Layout):
    name = "vehicleid"
    protocol = "vehicleid"
    side_sets_camera = True

    def list_file(self, split: str, test_size: int | None) -> str:
        return "train_test_split/" + ("train_list.txt" if split == "train" else
                                      f"test_list_{test_size or DEFAULT_TEST_SIZE}.txt")

    def parse(self, ctx: ParseContext, test_size: int | None) -> ReidDataset:
        test_size = test_size or DEFAULT_TEST_SIZE
        colors = self._read_attribute(ctx, "attribute/color_attr.txt")
        models = self._read_attribute(ctx, "attribute/model_attr.txt")
        train = self._read_list(ctx, "train_test_split/train_list.txt", colors, models)
        test_file = f"train_test_split/test_list_{test_size}.txt"
        if not ctx.path(test_file).is_file():
            found = sorted(p.name for p in ctx.path("train_test_split").glob("test_list_*.txt")) \
                if ctx.path("train_test_split").is_dir() else []
            ctx.problem(test_file, f"missing test list for data.test_size={test_size}",
                        f"use a test size whose list exists ({', '.join(found) or f'official: {TEST_SIZES}'})")
            test = []
        else:
            test = self._read_list(ctx, test_file, colors, models)
        # The VehicleID protocol draws its one-image-per-id galleries itself from the whole test list.
        return self.dataset(ctx, train, test, list(test), test_size)

    @staticmethod
    def _read_list(ctx: ParseContext, rel: str, colors: dict, models: dict) -> list[ImageRecord]:
        records = []
        for lineno, image, vid in read_pairs(ctx, rel, True, "list file"):
            path = ctx.image(f"image/{image}.jpg", rel, lineno)
            records.append(ImageRecord(path=path, vehicle_id=vid, camera_id=0, color_id=colors.get(vid),
                                       model_id=models.get(vid)))
        return records

    @staticmethod
    def _read_attribute(ctx: ParseContext, rel: str) -> dict[int, int]:
        """Vehicle id -> attribute id, as numbered in the file (VehicleID's own colour and model numbering)."""
        out = {}
        for lineno, vid, value in read_pairs(ctx, rel, False, "attribute file"):
            key = parse_int(vid)
            if key is None:
                ctx.problem(rel, f"vehicle id {vid!r} is not an integer", "each line is: VEHICLE_ID ATTRIBUTE_ID",
                            line=lineno)
                continue
            out[key] = value
        return out


LAYOUT = VehicleIDLayout()
load = LAYOUT.load
