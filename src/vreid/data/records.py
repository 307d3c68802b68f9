"""Image records and the train/query/gallery container that every layout parser returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

#: VeRi-776 keypoint orientation bins, in the order of their integer label.
VIEWPOINT_NAMES = (
    "front", "rear", "left", "left_front", "left_rear", "right", "right_front", "right_rear",
)

#: VeRi-776 colour ids 1..10 (index 0 unused so that ids map directly).
COLOR_NAMES = ("", "yellow", "orange", "green", "gray", "red", "blue", "white", "golden", "brown", "black")
#: VeRi-776 type ids 1..9.
TYPE_NAMES = ("", "sedan", "suv", "van", "hatchback", "mpv", "pickup", "bus", "truck", "estate")


@dataclass(frozen=True)
class ImageRecord:
    """One image of one vehicle seen by one camera.

    `path` is absolute. Optional fields are None where the layout has no such label.
    `viewpoint` is an index into VIEWPOINT_NAMES; `azimuth`/`elevation` are degrees.
    """

    path: str
    vehicle_id: int
    camera_id: int
    timestamp: float | None = None
    color_id: int | None = None
    type_id: int | None = None
    model_id: int | None = None
    viewpoint: int | None = None
    azimuth: float | None = None
    elevation: float | None = None


@dataclass
class ReidDataset:
    """The three image sets of one benchmark split, as parsed from disk.

    `protocol` names the evaluation protocol (registered in vreid.eval) that turns query/gallery into
    metrics. For VehicleID, query and gallery are both the whole test list: the protocol draws the
    one-image-per-id galleries itself.
    """

    name: str
    root: str
    train: list[ImageRecord]
    query: list[ImageRecord]
    gallery: list[ImageRecord]
    protocol: str = "veri776"
    info: dict = field(default_factory=dict)

    @staticmethod
    def count(records: Sequence[ImageRecord]) -> dict[str, int]:
        return {
            "images": len(records),
            "ids": len({r.vehicle_id for r in records}),
            "cameras": len({r.camera_id for r in records}),
        }

    def summary(self) -> dict[str, dict[str, int]]:
        return {s: self.count(getattr(self, s)) for s in ("train", "query", "gallery")}


def relabel(records: Sequence[ImageRecord]) -> tuple[list[int], dict[int, int]]:
    """Map vehicle ids to contiguous class indices 0..C-1 (sorted by id); returns labels and the map."""
    mapping = {vid: i for i, vid in enumerate(sorted({r.vehicle_id for r in records}))}
    return [mapping[r.vehicle_id] for r in records], mapping
