"""docs/results.md is generated: rows grouped by trunk and start, mean ± std over seeds, a verdict against bot."""
import json

import pytest

from vreid.config import load_experiment
from vreid.viz.leaderboard import Row, SeedRun, load_rows, mean_std, save_rows, trunk_and_start, verdict, \
    write_results_md


def _row(name: str, maps: list[float], trunk: str = "timm:mobilenetv2_100", start: str = "imagenet") -> Row:
    row = Row(name=name, config=f"configs/{name}.yaml", split="s", epochs=10, rerank="kreciprocal", params=3e6,
              command="python benchmarks/leaderboard.py", preset="crossview", trunk=trunk, start=start)
    for seed, m in enumerate(maps):
        row.add_run(SeedRun(seed=seed, plain={"mAP": m, "rank1": m - 0.05, "mINP": m / 2, "mCGM": m / 3},
                            reranked={"mAP": m + 0.04, "rank1": m}, train_seconds=60.0 * (seed + 1)))
    return row


def test_mean_and_sample_std():
    m, s = mean_std([0.2, 0.3, 0.4])
    assert m == pytest.approx(0.3) and s == pytest.approx(0.1)
    assert mean_std([0.5]) == (0.5, None)


def test_verdict_against_the_noise_of_the_difference():
    bot = _row("bot/synthetic", [0.30, 0.31, 0.29])
    assert verdict(bot, bot) == "reference"
    assert verdict(_row("x/a", [0.40, 0.41, 0.39]), bot).startswith("better (+10.0 ± ")
    assert verdict(_row("x/b", [0.20, 0.21, 0.19]), bot).startswith("worse (-10.0 ± ")
    # +1 point with a spread of 5 points is noise
    assert verdict(_row("x/c", [0.26, 0.31, 0.36]), bot).startswith("within noise (+1.0 ± ")
    assert verdict(_row("x/d", [0.5]), bot) == "needs 2+ seeds"
    assert verdict(_row("x/e", [0.5, 0.6]), None) == "no bot row in this group"


def test_a_seed_trained_again_replaces_its_run():
    row = _row("bot/synthetic", [0.3, 0.4])
    row.add_run(SeedRun(seed=0, plain={"mAP": 0.5}, reranked={"mAP": 0.6}, train_seconds=1.0))
    assert [r.seed for r in row.runs] == [0, 1] and row.values("mAP") == [0.5, 0.4]


def test_table_groups_by_trunk_and_start(tmp_path):
    rows = {(r.name, r.preset): r for r in [
        _row("mbr/synthetic", [0.1, 0.12, 0.11], trunk="resnet18_ibn_a", start="scratch"),
        _row("sbs/synthetic", [0.33, 0.34, 0.35]),
        _row("bot/synthetic", [0.30, 0.31, 0.29]),
        _row("bot/synthetic-scratch", [0.2, 0.21, 0.22], trunk="resnet18_ibn_a", start="scratch"),
    ]}
    results = tmp_path / "results.json"
    save_rows(results, rows)
    assert load_rows(results)["sbs/synthetic", "crossview"].runs[2].plain["mAP"] == 0.35
    md = tmp_path / "results.md"
    write_results_md(md, load_rows(results))
    text = md.read_text()
    scratch, imagenet = text.index("## resnet18_ibn_a, scratch"), text.index("## timm:mobilenetv2_100, imagenet")
    assert scratch < text.index("| bot/synthetic-scratch |") < text.index("| mbr/synthetic |") < imagenet
    assert imagenet < text.index("| bot/synthetic |") < text.index("| sbs/synthetic |")
    sbs = next(line for line in text.splitlines() if line.startswith("| sbs/synthetic |"))
    assert "| 3 | 34.0 ± 1.0 |" in sbs and "better (+4.0" in sbs and "| 2.0 min |" in sbs
    mbr = next(line for line in text.splitlines() if line.startswith("| mbr/synthetic |"))
    assert "worse (-10.0" in mbr
    assert "(seeds 0, 1, 2)" in text


def test_reranker_section_follows_the_rows(tmp_path):
    md = tmp_path / "results.md"
    (tmp_path / "results_rerankers.json").write_text(json.dumps({
        "title": "Re-rankers on the same features", "about": "how",
        "rows": [{"rerank": "none", "runs": 1, "mAP": 24.86, "rank1": 21.4545},
                 {"rerank": "contextual", "runs": 3, "mAP": 28.69, "mAP_std": 0.07, "rank1": 23.27,
                  "rank1_std": 0.63}]}))
    write_results_md(md, {("bot/synthetic", "crossview"): _row("bot/synthetic", [0.3])})
    text = md.read_text()
    assert "## Re-rankers on the same features" in text
    assert "| none | 1 | 24.9 | 21.5 |" in text and "| contextual | 3 | 28.7 ± 0.1 | 23.3 ± 0.6 |" in text
    assert text.index("Re-rankers") < text.index("## Commands")
    archive = tmp_path / "results-round1.md"   # another table reads its own re-rankers file, not results.md's
    write_results_md(archive, {("bot/synthetic", "hard"): _row("bot/synthetic", [0.3])})
    assert "Re-rankers" not in archive.read_text()


def test_trunk_and_start_of_configs():
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "configs"
    assert trunk_and_start(load_experiment(root / "mbr" / "synthetic.yaml", []).model) == ("resnet18_ibn_a",
                                                                                          "scratch")
    cotrain = load_experiment(root / "usl" / "synthetic-cotrain.yaml", []).model
    assert trunk_and_start(cotrain) == ("timm:mobilenetv2_100+timm:tf_efficientnet_lite0", "imagenet")
    bot, scratch = (load_experiment(root / "bot" / f"{c}.yaml", []).model for c in ("synthetic", "synthetic-scratch"))
    assert trunk_and_start(bot) == ("timm:mobilenetv2_100", "imagenet")
    assert trunk_and_start(scratch) == ("resnet18_ibn_a", "scratch")


def test_trunk_and_start_leaves_out_helper_models():
    from dataclasses import dataclass, field

    from vreid.models.backbones.config import BackboneConfig

    @dataclass
    class WithHelper:
        backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(name="timm:mobilenetv2_100",
                                                                                pretrained="imagenet"))
        helper: BackboneConfig = field(default_factory=lambda: BackboneConfig(name="resnet_tiny_ibn_a"),
                                       metadata={"reid_trunk": False})
        counted: BackboneConfig = field(default_factory=lambda: BackboneConfig(name="resnet18"))

    assert trunk_and_start(WithHelper()) == ("timm:mobilenetv2_100+resnet18", "imagenet/scratch")
