"""Evaluation of co-trained backbones: query x gallery distances averaged over backbones, one block at a time."""
from __future__ import annotations

from typing import Sequence

import torch

from vreid.eval.distance import prepare_features


def split_embedding(features: torch.Tensor, widths: Sequence[int]) -> list[torch.Tensor]:
    """The per-backbone blocks of a `usl` embedding (`method.widths`, concatenated in backbone order)."""
    if features.shape[1] != sum(widths):
        raise ValueError(f"embedding width {features.shape[1]} != sum of backbone widths {list(widths)}")
    return list(features.split(list(widths), dim=1))


class EnsembleDistances:
    """DistanceSource: mean over backbones of the Euclidean distance between L2-normalised features, as the
    paper evaluates; never more than one block of queries x all gallery rows per backbone in memory."""

    def __init__(self, query: Sequence[torch.Tensor], gallery: Sequence[torch.Tensor]) -> None:
        if len(query) != len(gallery) or not query:
            raise ValueError("need the same non-zero number of query and gallery feature blocks")
        self.pairs = [prepare_features(q, g, "cosine") for q, g in zip(query, gallery)]
        self.num_query, self.num_gallery = self.pairs[0][0].shape[0], self.pairs[0][1].shape[0]

    def block(self, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        total = torch.zeros(stop - start, self.num_gallery) if out is None else out.zero_()
        for q, g in self.pairs:
            total.add_((2.0 - 2.0 * (q[start:stop] @ g.T)).clamp_(min=0).sqrt_())
        return total.div_(len(self.pairs))
