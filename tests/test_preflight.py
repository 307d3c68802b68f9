"""Up-front checks: every shipped config builds (on the meta device), and wrong combinations name their key."""
from __future__ import annotations

from pathlib import Path

import pytest

from vreid.config import ConfigError, load_experiment
from vreid.engine.preflight import check_model_builds

CONFIGS = sorted(p for p in (Path(__file__).parents[1] / "configs").rglob("*.yaml") if "archs" not in p.parts)


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(p.parents[1])) for p in CONFIGS])
def test_every_shipped_config_passes_the_dry_build(path):
    check_model_builds(load_experiment(path))


def test_an_option_a_branch_does_not_take_names_its_key():
    cfg = load_experiment(Path(__file__).parents[1] / "configs" / "mbr" / "synthetic.yaml")
    cfg.model.branches[0].options["bogus"] = 1
    with pytest.raises(ConfigError, match=r"model\.branches\[0\]\.options.*bogus"):
        check_model_builds(cfg)
