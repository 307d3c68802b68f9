"""`vreid eval` on a trained run: its own folder per evaluation, the model's preprocessing, ranked lists that
follow the re-ranker."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import tiny_overrides
from vreid.config import ConfigError, load_experiment
from vreid.engine.run import load_data, run_evaluation


def test_each_evaluation_gets_its_own_folder(finished_run, tiny_world, tmp_path):
    run, _ = finished_run
    cfg = load_experiment(None, tiny_overrides(tiny_world, tmp_path / "unused"))
    first = run_evaluation(cfg, run)
    second = run_evaluation(cfg, run, rerank="aqe")
    again = run_evaluation(cfg, run, rerank="aqe")  # within the same second: still a folder of its own
    assert len({first["output_dir"], second["output_dir"], again["output_dir"]}) == 3
    for result, rerank in ((first, "none"), (second, "aqe")):
        folder = run / "eval" / result["output_dir"].split("/")[-1]
        assert f"-{rerank}" in folder.name and (folder / "results.json").is_file()
        assert json.loads((folder / "run_info.json").read_text())["rerank"] == rerank
    assert not (tmp_path / "unused").exists()  # the config's output_dir is not where evaluations go
    with pytest.raises(ConfigError, match="--overwrite"):
        run_evaluation(cfg, run, output_dir=first["output_dir"])
    run_evaluation(cfg, run, output_dir=first["output_dir"], overwrite=True)


def test_ranked_lists_follow_the_reranker(finished_run, tiny_world, tmp_path):
    from vreid.engine.bundle import load_bundle
    from vreid.engine.extract import extract_features
    from vreid.eval import ranked_topk
    from vreid.rerank import RERANKERS

    run, _ = finished_run
    cfg = load_experiment(None, tiny_overrides(tiny_world, tmp_path, **{"eval.top_k": 5}))
    run_evaluation(cfg, run, rerank="kreciprocal", output_dir=tmp_path / "kr")
    saved = np.load(tmp_path / "kr" / "ranked.npz")
    assert str(saved["rerank"]) == "kreciprocal"
    method, ds = load_bundle(run), load_data(cfg)
    qf, gf = extract_features(method, ds.query, cfg.data), extract_features(method, ds.gallery, cfg.data)
    source = RERANKERS.get("kreciprocal")(qf, gf, metric=cfg.eval.metric)
    idx, dist = ranked_topk(None, None, k=5, source=source)
    assert np.array_equal(saved["indices"], idx) and np.allclose(saved["distances"], dist)
    plain_idx, _ = ranked_topk(qf, gf, k=5, metric=cfg.eval.metric)
    assert not np.array_equal(plain_idx, idx)  # the old file held these whatever --rerank said


def test_the_models_preprocessing_wins_unless_set_on_the_command_line(finished_run, tiny_world, tmp_path, capsys):
    run, results = finished_run
    over = tiny_overrides(tiny_world, tmp_path, **{"data.height": 64, "data.width": 64})
    cfg = load_experiment(None, over)
    got = run_evaluation(cfg, run, output_dir=tmp_path / "a")
    assert got["mAP"] == pytest.approx(results["mAP"], abs=1e-6)  # evaluated at the trained 32 x 32
    assert "data.height: using the model's 32" in capsys.readouterr().err
    forced = run_evaluation(cfg, run, output_dir=tmp_path / "b", explicit=["data.height", "data.width"])
    assert "from the command line" in capsys.readouterr().err
    assert forced["mAP"] != pytest.approx(results["mAP"], abs=1e-6)
