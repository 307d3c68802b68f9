"""MBR branch kinds `bot_stack` and `grouped_mhsa` were `bot` and `hybrid`; the old names load with a warning."""
from __future__ import annotations

import pytest

from vreid.models.backbones import create_backbone
from vreid.models.branches import BRANCHES, build_branch, trunk_info


def test_the_new_kinds_are_registered_and_the_old_ones_are_not():
    assert {"bot_stack", "grouped_mhsa"} <= set(BRANCHES.names())
    assert not {"bot", "hybrid"} & set(BRANCHES.names())


def test_build_branch_maps_an_old_kind_with_a_warning():
    trunk = trunk_info(create_backbone("resnet_tiny_ibn_a"), 32, 32)
    with pytest.warns(FutureWarning, match="now 'grouped_mhsa'"):
        old = build_branch("hybrid", trunk, groups=2)
    assert type(old) is type(build_branch("grouped_mhsa", trunk, groups=2))
