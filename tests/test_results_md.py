"""docs/results.md is generated: the leaderboard rows, then (when its JSON exists) the re-ranker comparison."""
import json

from vreid.viz.leaderboard import Row, write_results_md


def _row() -> Row:
    return Row(name="bot/synthetic", config="configs/bot/synthetic.yaml", split="s", epochs=10,
               plain={"mAP": 0.25, "rank1": 0.2, "rank5": 0.5, "mINP": 0.15, "mCGM": 0.128},
               reranked={"mAP": 0.29, "rank1": 0.24}, rerank="kreciprocal", train_seconds=120, params=11e6,
               command="python benchmarks/leaderboard.py --methods bot")


def test_cgm_column_and_reranker_section(tmp_path):
    md = tmp_path / "results.md"
    write_results_md(md, {("bot/synthetic", "hard"): _row()})
    text = md.read_text()
    assert "| mCGM |" in text and "| 12.8 |" in text and "Re-rankers" not in text
    (tmp_path / "results_rerankers.json").write_text(json.dumps({
        "title": "Re-rankers on the same features", "about": "how",
        "rows": [{"rerank": "none", "runs": 1, "mAP": 24.86, "rank1": 21.4545},
                 {"rerank": "contextual", "runs": 3, "mAP": 28.69, "mAP_std": 0.07, "rank1": 23.27,
                  "rank1_std": 0.63}]}))
    write_results_md(md, {("bot/synthetic", "hard"): _row()})
    text = md.read_text()
    assert "## Re-rankers on the same features" in text
    assert "| none | 1 | 24.9 | 21.5 |" in text and "| contextual | 3 | 28.7 ± 0.1 | 23.3 ± 0.6 |" in text
    assert text.index("Re-rankers") < text.index("## Commands")
