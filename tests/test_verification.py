"""Verification (ROC, TPR@FPR, AUC): exact against sklearn, read block by block, selected by eval.metrics."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from vreid.eval.distance import MatrixDistances
from vreid.eval.verification import CURVE_FPRS, count_pairs, mean_verification, tpr_key, verify_distances

RULES = ("same_id_same_camera", "same_camera", "none")


def labelled_case(seed: int, n_q: int = 7, n_g: int = 23, levels: int | None = 6):
    """Distances (integers when `levels`, so that positives and negatives tie), ids and cameras."""
    rng = np.random.default_rng(seed)
    dist = rng.integers(0, levels, (n_q, n_g)) if levels else rng.random((n_q, n_g))
    ids = rng.integers(0, 4, n_q + n_g)
    cams = rng.integers(0, 3, n_q + n_g)
    return dist.astype(np.float32), ids[:n_q], ids[n_q:], cams[:n_q], cams[n_q:]


def reference_pairs(dist, q_ids, g_ids, q_cams, g_cams, junk_rule):
    """(labels, scores) of every kept pair, one at a time, as FastReID's evaluate_roc lists them."""
    labels, scores = [], []
    for q in range(len(q_ids)):
        for g in range(len(g_ids)):
            same_id, same_cam = q_ids[q] == g_ids[g], q_cams[q] == g_cams[g]
            if same_cam and (junk_rule == "same_camera" or (junk_rule == "same_id_same_camera" and same_id)):
                continue
            labels.append(int(same_id))
            scores.append(-float(dist[q, g]))
    return np.array(labels), np.array(scores)


def on_polyline(xs: np.ndarray, ys: np.ndarray, x: float, y: float) -> bool:
    """Whether (x, y) lies on a segment of the polyline through (xs, ys)."""
    for x0, x1, y0, y1 in zip(xs[:-1], xs[1:], ys[:-1], ys[1:]):
        inside = x0 <= x <= x1 and min(y0, y1) <= y <= max(y0, y1)
        if inside and abs((x1 - x0) * (y - y0) - (y1 - y0) * (x - x0)) < 1e-12:
            return True
    return False


class RecordingSource(MatrixDistances):
    """A matrix source that records the (start, stop) of every block it is asked for."""

    def __init__(self, distmat) -> None:
        super().__init__(distmat)
        self.asked: list[tuple[int, int]] = []

    def block(self, start, stop, out=None):
        self.asked.append((start, stop))
        return super().block(start, stop, out)


@pytest.mark.parametrize("junk_rule", RULES)
@pytest.mark.parametrize("chunk_size", [1, 3, 100])
@pytest.mark.parametrize("seed,levels", [(0, 6), (1, 3), (2, None)])
def test_roc_equals_sklearn(junk_rule, chunk_size, seed, levels):
    dist, *labels = labelled_case(seed, levels=levels)
    y, score = reference_pairs(dist, *labels, junk_rule)
    counts = count_pairs(MatrixDistances(dist), *labels, junk_rule=junk_rule, chunk_size=chunk_size)
    assert (counts.num_positive, counts.num_negative) == (y.sum(), len(y) - y.sum())
    full_fpr, full_tpr, _ = roc_curve(y, score, drop_intermediate=False)
    fpr, tpr = counts.roc_points()
    # every corner of ours is an operating point of sklearn's, and every one of sklearn's lies on our curve
    assert set(zip(fpr.tolist(), tpr.tolist())) <= set(zip(full_fpr.tolist(), full_tpr.tolist()))
    assert all(on_polyline(fpr, tpr, f, t) for f, t in zip(full_fpr, full_tpr))
    targets = np.unique(np.concatenate([full_fpr, np.linspace(0, 1, 41), [1e-4, 1e-3, 1e-2]]))
    expected = [full_tpr[full_fpr <= t].max() for t in targets]  # last point with fpr <= target
    assert counts.tpr_at(targets).tolist() == expected  # bit for bit
    assert counts.auc() == pytest.approx(roc_auc_score(y, score), abs=1e-12)


def test_a_larger_case_reads_tpr_at_fastreid_targets():
    dist, *labels = labelled_case(3, n_q=60, n_g=400, levels=None)
    y, score = reference_pairs(dist, *labels, "same_id_same_camera")
    result = verify_distances(MatrixDistances(dist), *labels, chunk_size=7)
    full_fpr, full_tpr, _ = roc_curve(y, score, drop_intermediate=False)
    for target, value in result.tpr_at_fpr.items():
        assert value == full_tpr[full_fpr <= target].max()
    assert result.auc == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert len(result.curve_fpr) == len(result.curve_tpr) == len(CURVE_FPRS) <= 210
    assert (np.diff(result.curve_tpr) >= 0).all() and result.curve_tpr[-1] == 1.0
    d = result.to_dict()
    assert set(d) >= {"tpr@fpr=1e-4", "tpr@fpr=1e-3", "tpr@fpr=1e-2", "roc_auc", "roc_curve", "roc_pairs"}
    json.dumps(d)


def test_reads_the_source_block_by_block():
    dist, *labels = labelled_case(4, n_q=10, n_g=30)
    source = RecordingSource(dist)
    result = verify_distances(source, *labels, chunk_size=4)
    assert max(stop - start for start, stop in source.asked) == 4  # never the whole Q x G at once
    assert source.asked == [(0, 4), (4, 8), (8, 10)] * 2  # positives pass, then negatives pass
    whole = verify_distances(MatrixDistances(dist), *labels, chunk_size=100)
    assert result.to_dict() == whole.to_dict()


def test_keys_errors_and_means():
    assert tpr_key(1e-4) == "tpr@fpr=1e-4" and tpr_key(5e-3) == "tpr@fpr=5e-3"
    from vreid.eval.errors import EvaluationError

    dist, q_ids, g_ids, q_cams, g_cams = labelled_case(5)
    with pytest.raises(EvaluationError, match="no negative pair"):
        verify_distances(MatrixDistances(dist), np.zeros_like(q_ids), np.zeros_like(g_ids), q_cams, g_cams,
                         junk_rule="none")
    with pytest.raises(EvaluationError, match="no positive pair"):
        verify_distances(MatrixDistances(dist), q_ids, g_ids + 100, q_cams, g_cams)
    a = verify_distances(MatrixDistances(dist), q_ids, g_ids, q_cams, g_cams)
    b = verify_distances(MatrixDistances(dist[:, ::-1].copy()), q_ids, g_ids, q_cams, g_cams)
    mean = mean_verification([a, b])
    assert mean.auc == pytest.approx((a.auc + b.auc) / 2)
    assert np.allclose(mean.curve_tpr, (a.curve_tpr + b.curve_tpr) / 2)


def test_evaluate_scores_the_reranked_distances():
    from vreid.eval import distance_source, evaluate, evaluate_protocol
    from test_eval_protocols import records, split

    qf, gf, q_ids, g_ids, q_cams, g_cams = split(1)
    got = evaluate(qf, gf, q_ids, g_ids, q_cams, g_cams, rerank="kreciprocal", roc=True)
    direct = verify_distances(distance_source(qf, gf, rerank="kreciprocal"), q_ids, g_ids, q_cams, g_cams)
    assert got.verification.to_dict() == direct.to_dict()
    assert got.to_dict()["roc_auc"] == direct.auc
    q, g = records(q_ids, q_cams, "q"), records(g_ids, g_cams, "g")
    default = evaluate_protocol("veri776", qf, gf, q, g)
    assert "roc_auc" not in default.to_dict() and default.mCGM is None
    chosen = evaluate_protocol("veri776", qf, gf, q, g, metrics=["map", "cgm", "roc"])
    assert chosen.mCGM is not None and chosen.to_dict()["tpr@fpr=1e-2"] == chosen.verification.tpr_at_fpr[1e-2]
    assert chosen.mAP == default.mAP


def test_vehicleid_averages_roc_over_draws():
    from vreid.eval import evaluate_protocol
    from test_eval_protocols import records

    rng = np.random.default_rng(2)
    ids = np.repeat(np.arange(25), rng.integers(2, 6, 25))
    feats = (np.eye(25)[ids] * 3 + rng.normal(size=(len(ids), 25))).astype(np.float32)
    test = records(ids, np.zeros(len(ids)), "t")
    res = evaluate_protocol("vehicleid", feats, feats, test, list(test), metrics=["roc"])
    draws = res.extra["draws"]
    assert res.to_dict()["roc_auc"] == pytest.approx(np.mean([d["roc_auc"] for d in draws]))
    assert res.to_dict()["tpr@fpr=1e-2"] == pytest.approx(np.mean([d["tpr@fpr=1e-2"] for d in draws]))
    from vreid.eval.errors import EvaluationError

    with pytest.raises(EvaluationError, match="CGM"):
        evaluate_protocol("vehicleid", feats, feats, test, list(test), metrics=["cgm"])


def test_eval_metrics_is_validated_against_the_registry():
    from vreid.cli.jobs import METRIC_NAMES
    from vreid.config import ConfigError, load_experiment
    from vreid.eval.selection import EVAL_METRICS

    assert set(METRIC_NAMES) == set(EVAL_METRICS.names()) == {"map", "cmc", "minp", "cgm", "roc"}
    assert load_experiment(None).eval.metrics == ["map", "cmc", "minp"]
    assert load_experiment(None, ["eval.metrics=[map,roc]"]).eval.metrics == ["map", "roc"]
    with pytest.raises(ConfigError) as err:
        load_experiment(None, ["eval.metrics=[map,auc]"])
    assert err.value.key == "eval.metrics" and "'auc'" in str(err.value)
    assert all(name in str(err.value) for name in EVAL_METRICS.names())


def test_printed_results_show_tpr_columns_when_present():
    from rich.console import Console

    from vreid.viz.table import print_results

    plain = {"mAP": 0.5, "rank1": 0.6, "rank5": 0.7, "rank10": 0.8, "mINP": 0.2}
    console = Console(width=80, record=True)
    print_results(plain, console=console)
    assert "TPR@FPR" not in console.export_text()
    print_results({**plain, "tpr@fpr=1e-4": 0.1234, "tpr@fpr=1e-2": 0.5, "roc_auc": 0.99}, console=console)
    text = console.export_text()
    assert "TPR@FPR=1e-4" in text and "12.34" in text and "ROC AUC" in text and "50.00" in text


def test_cli_eval_metrics_roc(finished_run, tiny_world, tmp_path):
    from typer.testing import CliRunner

    from conftest import tiny_overrides
    from vreid.cli.main import app
    from vreid.viz.folder_report import write_folder_report

    run, results = finished_run
    empty = str(Path(__file__).parent / "data" / "empty.yaml")
    over = tiny_overrides(tiny_world, tmp_path / "unused")
    runner = CliRunner()
    bad = runner.invoke(app, ["eval", empty, *over, "--checkpoint", str(run), "--metrics", "map,rock"])
    assert bad.exit_code == 2 and "eval.metrics" in bad.output and "minp" in bad.output
    r = runner.invoke(app, ["eval", empty, *over, "--checkpoint", str(run), "--metrics", "map,cmc,roc",
                            "-o", str(tmp_path / "ev"), "--json"])
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert saved["mAP"] == pytest.approx(results["mAP"], abs=1e-6)  # the retrieval numbers are unchanged
    assert 0 <= saved["tpr@fpr=1e-4"] <= saved["tpr@fpr=1e-3"] <= saved["tpr@fpr=1e-2"] <= 1
    assert 0.5 < saved["roc_auc"] <= 1 and len(saved["roc_curve"]["fpr"]) == len(saved["roc_curve"]["tpr"])
    assert "roc_auc" not in results  # the default selection adds nothing
    page = write_folder_report(tmp_path / "ev", queries=2).read_text()
    assert "<h2>ROC</h2>" in page and "TPR@FPR=1e-2" in page
