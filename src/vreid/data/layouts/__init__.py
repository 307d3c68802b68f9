"""Dataset layouts on disk, by name: each parses a root folder into a ReidDataset (`LAYOUTS.get(name).load(root)`)."""
from __future__ import annotations

import os

from vreid.data.layouts.base import Layout, ParseContext
from vreid.data.records import ReidDataset
from vreid.registry import Registry

#: layout name -> Layout (an object with .load(root, test_size=None) -> ReidDataset)
LAYOUTS: Registry[Layout] = Registry("dataset layout")


def _register_builtin() -> None:
    from vreid.data.layouts import folder, vehicleid, veri776, veriwild

    for module in (veri776, vehicleid, veriwild, folder):
        LAYOUTS.register(module.LAYOUT.name)(module.LAYOUT)


_register_builtin()


def load_layout(layout: str, root: str | os.PathLike, test_size: int | None = None) -> ReidDataset:
    """Parse `root` as `layout`; raises DatasetError (every problem found) or RegistryError (unknown layout)."""
    return LAYOUTS.get(layout).load(root, test_size)


__all__ = ["LAYOUTS", "Layout", "ParseContext", "load_layout"]
