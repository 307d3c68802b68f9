"""MBR configs naming an old branch kind (`bot`, `hybrid`) still load, warn with the new name and use it."""
from __future__ import annotations

import pytest

from vreid.config.loader import build
from vreid.methods.mbr import MbrConfig


@pytest.mark.parametrize("old,new", [("bot", "bot_stack"), ("hybrid", "grouped_mhsa")])
def test_an_old_kind_in_a_config_warns_with_the_new_name_and_becomes_it(old, new):
    with pytest.warns(FutureWarning, match=f"branch kind '{old}' is deprecated: it is now '{new}'"):
        cfg = build(MbrConfig, {"branches": [{"kind": old}]})
    assert cfg.branches[0].kind == new


def test_the_default_branches_use_the_new_kind_without_a_warning(recwarn):
    cfg = build(MbrConfig, {})
    assert [b.kind for b in cfg.branches] == ["layer4", "layer4", "bot_stack", "bot_stack"]
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)]
