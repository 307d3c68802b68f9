"""One run per folder: refusal, lock, resume fallbacks, settings on resume, and what a stopped run leaves usable."""
from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import CrashAt, tiny_overrides
from vreid.config import ConfigError, load_experiment
from vreid.engine.checkpoint import CheckpointError
from vreid.engine.run import run_training
from vreid.engine.run_folder import RunLock


def tree_digest(folder: Path) -> dict[str, str]:
    """Path -> content hash of every file below `folder` (to show a failed command changed nothing)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def cfg_for(world, out, **extra):
    return load_experiment(None, tiny_overrides(world, out, **extra))


def crashed_run(world, out, crash_step: int, **extra):
    """A run killed after `crash_step` steps, with checkpoints every 2 steps."""
    from vreid.engine.run import load_data
    from vreid.engine.trainer import Trainer

    cfg = cfg_for(world, out, **{"train.checkpoint_every_steps": 2, **extra})
    trainer = Trainer(cfg, load_data(cfg), hooks=[CrashAt(crash_step)])
    with pytest.raises(RuntimeError, match="simulated kill"):
        trainer.fit()
    trainer.close()
    return cfg


@pytest.fixture(scope="module")
def reference(finished_run):
    return finished_run


def test_a_folder_with_a_run_is_refused_then_overwritten(reference, tiny_world, tmp_path):
    out, _ = reference
    before = tree_digest(out)
    with pytest.raises(ConfigError, match="holds a run already.*--resume.*--overwrite"):
        run_training(cfg_for(tiny_world, out))
    assert tree_digest(out) == before
    target = tmp_path / "run"
    run_training(cfg_for(tiny_world, target))
    (target / "notes.txt").write_text("mine")
    results = run_training(cfg_for(tiny_world, target, seed=8), overwrite=True)
    info = json.loads((target / "run_info.json").read_text())
    assert info["seed"] == 8 and "mAP" in results
    assert info["threads"]["torch"] == torch.get_num_threads()   # a seed reproduces only at the same thread count
    assert (target / "notes.txt").read_text() == "mine"  # only vreid's own outputs are replaced


def test_a_second_process_on_the_same_folder_is_locked_out(tiny_world, tmp_path):
    with RunLock(tmp_path):
        before = tree_digest(tmp_path)
        with pytest.raises(ConfigError, match="in use by another vreid process"):
            run_training(cfg_for(tiny_world, tmp_path))
        assert tree_digest(tmp_path) == before


def test_metrics_csv_holds_the_evaluation_row(reference):
    out, results = reference
    lines = (out / "metrics.csv").read_text().splitlines()
    header, last = lines[0].split(","), lines[-1].split(",")
    assert "mAP" in header and "rank1" in header
    assert float(last[header.index("mAP")]) == pytest.approx(results["mAP"])


def test_weights_and_checkpoints_have_the_usual_modes(tiny_world, tmp_path):
    crashed_run(tiny_world, tmp_path, 3)
    umask = os.umask(0)
    os.umask(umask)
    folder = next((tmp_path / "checkpoints").glob("step-*"))
    assert stat.S_IMODE((folder / "model.safetensors").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask


def test_a_stopped_run_is_evaluable(tiny_world, tmp_path):
    from vreid.engine.bundle import load_bundle

    crashed_run(tiny_world, tmp_path, 3)
    assert not (tmp_path / "model.safetensors").exists()
    method = load_bundle(tmp_path)  # model_info.json is written at the start, weights from the checkpoint
    assert method.info.height == 32


def test_resume_skips_a_truncated_latest_checkpoint(reference, tiny_world, tmp_path):
    ref_out, _ = reference
    cfg = crashed_run(tiny_world, tmp_path, 5)
    ckpts = tmp_path / "checkpoints"
    assert json.loads((ckpts / "last.json").read_text())["step"] == 4
    latest = ckpts / "step-00000004" / "model.safetensors"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    (ckpts / ".step-00000006.abc123").mkdir()  # what a kill during a checkpoint write leaves
    run_training(cfg, resume=True)
    assert not list(ckpts.glob(".step-*"))
    ref, got = load_file(str(ref_out / "model.safetensors")), load_file(str(tmp_path / "model.safetensors"))
    assert all(torch.equal(ref[k], got[k]) for k in ref)  # resumed exactly from step 2


def test_resume_with_a_damaged_pointer_uses_the_newest_folder(tiny_world, tmp_path):
    from vreid.engine import checkpoint as ckpt

    crashed_run(tiny_world, tmp_path, 5)
    (tmp_path / "checkpoints" / "last.json").write_text("{not json")
    assert ckpt.latest_checkpoint(tmp_path / "checkpoints").name == "step-00000004"
    (tmp_path / "checkpoints" / "last.json").write_text('{"step": 9, "folder": "step-00000009"}')
    assert ckpt.latest_checkpoint(tmp_path / "checkpoints").name == "step-00000004"


def test_a_failed_resume_changes_nothing(tiny_world, tmp_path):
    crashed_run(tiny_world, tmp_path, 1)  # killed before its first checkpoint
    before = tree_digest(tmp_path)
    with pytest.raises(CheckpointError, match="no intact checkpoint"):
        run_training(cfg_for(tiny_world, tmp_path, **{"train.checkpoint_every_steps": 2}), resume=True)
    assert tree_digest(tmp_path) == before


def test_resume_refuses_changed_settings_unless_allowed(tiny_world, tmp_path):
    crashed_run(tiny_world, tmp_path, 3)
    before = tree_digest(tmp_path)
    changed = cfg_for(tiny_world, tmp_path, **{"train.checkpoint_every_steps": 2, "optim.lr": 0.01})
    with pytest.raises(ConfigError, match=r"optim\.lr: 0\.001 -> 0\.01.*--allow-changes"):
        run_training(changed, resume=True)
    assert tree_digest(tmp_path) == before
    run_training(changed, resume=True, allow_changes=True)
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["changes_on_resume"] == ["optim.lr: 0.001 -> 0.01"]


def test_resume_accepts_settings_that_keep_the_run_meaning(tiny_world, tmp_path):
    crashed_run(tiny_world, tmp_path, 3)
    same = cfg_for(tiny_world, tmp_path, **{"train.checkpoint_every_steps": 2, "train.log_every": 5,
                                            "data.workers": 0})
    assert "mAP" in run_training(same, resume=True)


def test_demo_world_is_rendered_again_when_its_settings_change(tmp_path):
    from vreid.demo import DemoSettings, render_demo_data, rendered_world

    s = DemoSettings(output=str(tmp_path), ids=4, cameras=2, size=16, seed=1, workers=0)
    render_demo_data(tmp_path / "data", s)
    assert render_demo_data(tmp_path / "data", s) == {"reused": str(tmp_path / "data")}
    s.seed = 2
    summary = render_demo_data(tmp_path / "data", s)
    assert "reused" not in summary and rendered_world(tmp_path / "data")["seed"] == 2


def test_resume_by_run_folder_continues_that_folder(tiny_world, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from vreid.cli.main import app

    crashed_run(tiny_world, tmp_path / "original", 3)
    shutil.copytree(tmp_path / "original", tmp_path / "copy")
    before = tree_digest(tmp_path / "original")
    result = CliRunner().invoke(app, ["train", str(tmp_path / "copy"), "--resume"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "copy" / "model.safetensors").is_file()  # its config.yaml names "original"
    assert tree_digest(tmp_path / "original") == before
