"""Branches: modules that replace a ResNet's layer4 on top of a shared stem..layer3 trunk (multi-branch re-id).

Registered in `BRANCHES` (name -> builder(trunk: TrunkInfo, **options)); every branch maps the layer3 map
(B, C_in, h, w) to a map (B, out_channels, h', w') whose channels split into `num_embeddings` equal, independent
parts (1 for a plain branch, G for a grouped one).
"""
from vreid.models.branches import attention, grouped, hybrid, layer4  # noqa: F401  (fill the registry)
from vreid.models.branches.attention import BoTBlock, BoTStack, RelPosMHSA
from vreid.models.branches.grouped import grouped_copy
from vreid.models.branches.hybrid import SplitMixer, hybrid_copy
from vreid.models.branches.layer4 import copy_layer4, set_first_stride
from vreid.models.branches.registry import (
    BRANCHES, RENAMED_KINDS, ChannelRoll, TrunkInfo, accepted_kinds, build_branch, builder_defaults, current_kind,
    trunk_info,
)

__all__ = ["BRANCHES", "RENAMED_KINDS", "accepted_kinds", "current_kind", "TrunkInfo", "trunk_info", "build_branch",
           "builder_defaults", "ChannelRoll", "copy_layer4", "set_first_stride", "grouped_copy", "RelPosMHSA",
           "BoTBlock", "BoTStack", "SplitMixer", "hybrid_copy"]
