"""The newcomer's first minutes: configs by name from any folder, `vreid configs`, `vreid config show`,
`vreid visualize` on a finished run or an evaluation folder, and the demo's default config."""
from __future__ import annotations

import shutil

import pytest
import yaml
from typer.testing import CliRunner

from conftest import tiny_overrides
from vreid.cli.main import app
from vreid.config import ConfigError, load_experiment
from vreid.config.catalog import PACKAGED_CONFIGS, packaged_configs

runner = CliRunner()


def test_packaged_config_loads_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("bot/synthetic", "bot/synthetic.yaml", "configs/bot/synthetic.yaml"):
        cfg = load_experiment(name)
        assert cfg.model.name == "bot" and cfg.output_dir == "runs/bot-synthetic", name
    assert load_experiment("moreid/veri776").model.name == "moreid"   # its _base_ is ../sbs/veri776.yaml


def test_a_file_on_disk_wins_over_the_packaged_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bot").mkdir()
    (tmp_path / "bot" / "synthetic.yaml").write_text("output_dir: mine\n")
    assert load_experiment("bot/synthetic.yaml").output_dir == "mine"
    assert load_experiment("bot/synthetic").output_dir == "runs/bot-synthetic"   # no file of that name here


def test_a_typo_names_close_matches(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="did you mean bot/synthetic") as e:
        load_experiment("bot/synthtic")
    assert "vreid configs" in str(e.value)


def test_the_repository_configs_path_is_the_packaged_folder():
    from pathlib import Path

    repo_configs = Path(__file__).resolve().parent.parent / "configs"
    assert repo_configs.resolve() == PACKAGED_CONFIGS
    assert "mbr/archs/mbr-4b" in packaged_configs() and len(packaged_configs()) > 40


def test_demo_defaults_to_the_packaged_config(tmp_path, monkeypatch):
    from vreid.demo import DemoSettings

    monkeypatch.chdir(tmp_path)
    assert load_experiment(DemoSettings().config).model.name == "bot"
    r = runner.invoke(app, ["demo", "--help"])
    assert r.exit_code == 0 and "bot/synthetic" in r.output


def test_configs_lists_name_method_and_layout():
    r = runner.invoke(app, ["configs"], terminal_width=200)
    assert r.exit_code == 0, r.output
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:4]]
            for line in r.output.splitlines() if line.count("│") >= 4}
    assert set(packaged_configs()) <= set(rows)
    assert rows["bot/synthetic"] == ["bot", "veri776"] and rows["usl/veriwild"] == ["usl", "veriwild"]


def test_config_show_prints_the_resolved_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["config", "show", "mbr/synthetic", "data.root=/data/x", "optim.lr=0.01"])
    assert r.exit_code == 0, r.output
    shown = yaml.safe_load(r.output)
    assert shown["data"]["root"] == "/data/x" and shown["optim"]["lr"] == 0.01
    assert len(shown["model"]["branches"]) == 4   # from its _base_ archs/mbr-4b.yaml
    assert not list(tmp_path.iterdir())           # nothing ran, nothing written
    r = runner.invoke(app, ["config", "show", "bot/synthtic"])
    assert r.exit_code == 2 and r.output.startswith("error: ") and "bot/synthetic" in r.output


@pytest.fixture(scope="module")
def finished_run(tiny_world, tmp_path_factory):
    """A tiny run trained for two steps, with its final evaluation (results.json, ranked.npz) at its top."""
    from vreid.engine.run import run_training

    out = tmp_path_factory.mktemp("run")
    cfg = load_experiment(None, tiny_overrides(tiny_world, out, **{
        "schedule.epochs": 1, "schedule.warmup_epochs": 0, "train.steps_per_epoch": 2}))
    run_training(cfg)
    return out


def test_visualize_a_finished_run(finished_run, tmp_path):
    report = tmp_path / "r.html"
    r = runner.invoke(app, ["visualize", str(finished_run), "-o", str(report), "--queries", "3"])
    assert r.exit_code == 0, r.output
    page = report.read_text()
    assert page.count('class="query"') == 3 and 'class="hit"' in page and "<polyline" in page


def test_visualize_an_evaluation_folder(finished_run, tiny_world, tmp_path):
    from vreid.engine.run import run_evaluation

    cfg = load_experiment(None, tiny_overrides(tiny_world, tmp_path / "unused"))
    run_evaluation(cfg, finished_run, output_dir=tmp_path / "eval")
    r = runner.invoke(app, ["visualize", str(tmp_path / "eval")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "eval" / "report.html").read_text().count('class="query"') == 6


@pytest.mark.parametrize("missing", ["results.json", "ranked.npz"])
def test_visualize_names_a_missing_file_and_the_fix(finished_run, tmp_path, missing):
    folder = tmp_path / "run"
    shutil.copytree(finished_run, folder)
    (folder / missing).unlink()
    r = runner.invoke(app, ["visualize", str(folder)])
    assert r.exit_code == 2 and r.output.startswith("error: ")
    assert str(folder / missing) in r.output and "vreid eval" in r.output
    assert not (folder / "report.html").exists()


def test_visualize_points_a_stopped_run_at_its_latest_evaluation(finished_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(finished_run, folder)
    (folder / "eval" / "20260101-000000-none").mkdir(parents=True)
    (folder / "results.json").rename(folder / "eval" / "20260101-000000-none" / "results.json")
    r = runner.invoke(app, ["visualize", str(folder)])
    assert r.exit_code == 2 and f"latest evaluation is in {folder / 'eval' / '20260101-000000-none'}" in r.output


def test_eval_help_lists_every_reranker():
    from vreid.rerank import RERANKERS

    from vreid.cli.jobs import RERANK_NAMES

    assert set(RERANK_NAMES) == {"none", *RERANKERS.names()}
    r = runner.invoke(app, ["eval", "--help"], terminal_width=200)
    assert r.exit_code == 0 and all(name in r.output for name in RERANK_NAMES)
