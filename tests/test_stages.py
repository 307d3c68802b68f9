"""Multi-stage runs (vreid.engine.stages), through run_training as `vreid train` calls it, with saver's two stages."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from vreid.config import ConfigError, load_experiment
from vreid.config.catalog import PACKAGED_CONFIGS
from vreid.engine import run as run_module
from vreid.engine.run import run_evaluation, run_training
from vreid.errors import RunStopped
from tests.conftest import tiny_overrides

pytestmark = pytest.mark.usefixtures("one_thread")
SINGLE_RUN = run_module._train_single_run


def saver_cfg(world, out):
    extra = {"model.name": "saver", "model.vae.widths": "[8,16]", "model.vae.latent_dim": 8,
             "model.vae_stage.epochs": 1, "schedule.epochs": 1, "model.residual_panel": 2}
    return load_experiment(PACKAGED_CONFIGS / "saver" / "synthetic.yaml", tiny_overrides(world, out, **extra))


class Recorder:
    """Wraps the single-run trainer: records each stage it runs; `stop_before` raises instead of that stage."""

    def __init__(self, monkeypatch, stop_before: str | None = None) -> None:
        self.real, self.stop_before, self.calls = SINGLE_RUN, stop_before, []
        monkeypatch.setattr(run_module, "_train_single_run", self)

    def __call__(self, cfg, **kw):
        name = Path(cfg.output_dir).name
        if name == self.stop_before:
            raise RunStopped(f"stopped before stage {name}", signum=15)
        self.calls.append((name, kw["resume"]))
        return self.real(cfg, **kw)


def test_a_run_stopped_between_the_stages_resumes_at_the_second(tiny_world, tmp_path, monkeypatch):
    out = tmp_path / "run"
    first = Recorder(monkeypatch, stop_before="reid")
    with pytest.raises(RunStopped):
        run_training(saver_cfg(tiny_world, out))
    assert first.calls == [("vae", False)]
    assert (out / "stages" / "vae" / "model.safetensors").is_file()
    assert json.loads((out / "stages.json").read_text())["done"] == ["vae"]
    assert not (out / "model.safetensors").exists()

    with pytest.raises(ConfigError, match="--resume"):  # the same command without --resume is refused
        run_training(saver_cfg(tiny_world, out))

    second = Recorder(monkeypatch)
    results = run_training(saver_cfg(tiny_world, out), resume=True)
    assert second.calls == [("reid", False)]  # the VAE stage is not trained again
    assert results["mAP"] > 0
    info = json.loads((out / "model_info.json").read_text())
    assert info["method"]["name"] == "saver" and info["method"]["vae_weights"] == str(out / "stages" / "vae")
    assert (out / "residuals.png").is_file()
    # the run folder is evaluated like any run, and gives the training's own numbers
    again = run_evaluation(saver_cfg(tiny_world, out), out)
    assert again["mAP"] == pytest.approx(results["mAP"])


def test_a_run_stopped_inside_a_stage_continues_it_from_its_checkpoint(tiny_world, tmp_path, monkeypatch):
    out = tmp_path / "run"
    cfg = saver_cfg(tiny_world, out)
    cfg.model.vae_stage.epochs = 2
    cfg.train.checkpoint_every_epochs = 1
    Recorder(monkeypatch, stop_before="reid")
    with pytest.raises(RunStopped):
        run_training(cfg)
    # simulate a kill in the VAE stage's second epoch: its first-epoch checkpoint stays, the stage is not done
    (out / "stages" / "vae" / "model.safetensors").unlink()
    (out / "stages.json").write_text(json.dumps({"stages": ["vae", "reid"], "done": []}))
    resumed = Recorder(monkeypatch)
    run_training(cfg, resume=True)
    assert resumed.calls == [("vae", True), ("reid", False)]
    assert (out / "model.safetensors").is_file()


def test_overwrite_starts_every_stage_again(tiny_world, tmp_path, monkeypatch):
    out = tmp_path / "run"
    run_training(saver_cfg(tiny_world, out))
    again = Recorder(monkeypatch)
    run_training(saver_cfg(tiny_world, out), overwrite=True)
    assert again.calls == [("vae", False), ("reid", False)]


def test_a_method_without_stages_is_one_plain_run(tiny_world, tmp_path):
    out = tmp_path / "run"
    cfg = load_experiment(PACKAGED_CONFIGS / "saver" / "synthetic-no-residual.yaml",
                          tiny_overrides(tiny_world, out, **{"model.name": "saver", "schedule.epochs": 1}))
    run_training(cfg)
    assert (out / "model.safetensors").is_file() and not (out / "stages").exists()
