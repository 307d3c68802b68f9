"""Side-information embeddings (SIE-style): learnable per-camera and per-viewpoint vectors added to a feature.

Reusable by any method that gets ``camera_ids`` / ``viewpoints`` in its batches (raw ids, -1 where unknown).
"""
from __future__ import annotations

import torch
from torch import nn


def rows_for_ids(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``table[ids]`` as (B, dim); ids that are unknown (-1) or outside the table (a camera never seen when the
    model was built) give a zero row. The one metadata lookup of vreid (SIE tables here, MBR's LAI rows)."""
    ids = ids.to(table.device).long()
    known = (ids >= 0) & (ids < table.shape[0])
    return table[ids.clamp(0, table.shape[0] - 1)] * known[:, None].to(table.dtype)


class SideInfoEmbedding(nn.Module):
    """``weight * (E_cam[camera] + E_view[viewpoint])`` as a (B, dim) tensor to add to a feature.

    Tables start at zero, so a freshly built model behaves exactly as one without side information and the
    embeddings grow only as far as the loss asks. Ids that are unknown (-1) or outside a table (a camera never
    seen when the model was built) contribute zero. A table of size 0 (``num_cameras=0``) is not built.
    """

    def __init__(self, dim: int, num_cameras: int = 0, num_viewpoints: int = 0, weight: float = 1.0) -> None:
        super().__init__()
        self.dim, self.weight = dim, float(weight)
        self.camera = nn.Embedding(num_cameras, dim) if num_cameras > 0 else None
        self.viewpoint = nn.Embedding(num_viewpoints, dim) if num_viewpoints > 0 else None
        for table in (self.camera, self.viewpoint):
            if table is not None:
                nn.init.zeros_(table.weight)

    @staticmethod
    def _lookup(table: nn.Embedding | None, ids: torch.Tensor | None, batch: int, ref: torch.Tensor) -> torch.Tensor:
        if table is None or ids is None:
            return ref.new_zeros(batch, ref.shape[-1])
        return rows_for_ids(table.weight, ids)

    def forward(self, camera_ids: torch.Tensor | None, viewpoints: torch.Tensor | None, batch: int) -> torch.Tensor:
        ref = next(self.parameters(), None)
        if ref is None:
            raise RuntimeError("SideInfoEmbedding has neither a camera nor a viewpoint table")
        out = self._lookup(self.camera, camera_ids, batch, ref) + self._lookup(self.viewpoint, viewpoints, batch, ref)
        return self.weight * out
