"""End-to-end training on the tiny synthetic world: outputs, exact resume, DDP on CPU, CLI paths."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import CrashAt, tiny_overrides, train_run
from vreid.config import load_experiment
from vreid.engine.hooks import Hook


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


train = train_run


class SignalAt(Hook):
    def __init__(self, step: int) -> None:
        self.step = step

    def after_step(self, trainer, batch, outputs, losses) -> None:
        if trainer.step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture(scope="module")
def reference_run(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    cfg = load_experiment(None, tiny_overrides(tiny_world, out))
    results, trainer = train(cfg)
    return out, results, trainer.steps_this_epoch


def test_training_writes_outputs_and_learns(reference_run):
    out, results, _ = reference_run
    for name in ("config.yaml", "run_info.json", "metrics.csv", "model.safetensors", "model_info.json",
                 "results.json", "ranked.npz"):
        assert (out / name).is_file(), name
    info = json.loads((out / "run_info.json").read_text())
    assert info["seed"] == 7 and torch.__version__.startswith(info["versions"]["torch"]) and info["git"]
    assert 0.0 <= results["mAP"] <= 1.0 and len(results["cmc"]) >= 1
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss,") and len(rows) > 2


def test_resume_after_kill_mid_epoch_gives_identical_weights(reference_run, tiny_world, tmp_path):
    ref_out, _, steps_per_epoch = reference_run
    assert steps_per_epoch >= 3
    crash_step = steps_per_epoch + 2  # in the middle of the second epoch, one step after a checkpoint
    cfg = load_experiment(None, tiny_overrides(tiny_world, tmp_path, **{"train.checkpoint_every_steps": 2}))
    if crash_step % 2 == 0:
        crash_step += 1
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(cfg, hooks=[CrashAt(crash_step)])
    last = json.loads((tmp_path / "checkpoints" / "last.json").read_text())
    assert last["step"] == crash_step - 1 and last["step"] % steps_per_epoch != 0  # mid-epoch checkpoint
    train(cfg, resume=True)
    ref, got = weights(ref_out), weights(tmp_path)
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k


def test_sigterm_checkpoints_and_resume_matches(reference_run, tiny_world, tmp_path):
    ref_out, _, _ = reference_run
    cfg = load_experiment(None, tiny_overrides(tiny_world, tmp_path))
    from vreid.errors import RunStopped

    with pytest.raises(RunStopped, match="stopped by SIGTERM at step 3.*--resume") as stop:
        train(cfg, hooks=[SignalAt(3)])
    assert stop.value.exit_code == 143
    assert not (tmp_path / "model.safetensors").exists()
    train(cfg, resume=True)
    ref, got = weights(ref_out), weights(tmp_path)
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_resume_without_checkpoint_is_a_clear_error(tiny_world, tmp_path):
    from vreid.engine.checkpoint import CheckpointError

    cfg = load_experiment(None, tiny_overrides(tiny_world, tmp_path))
    with pytest.raises(CheckpointError, match="no intact checkpoint to resume from"):
        train(cfg, resume=True)


def test_ddp_two_processes_on_cpu(tiny_world, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "vreid", "train", "none", *tiny_overrides(tiny_world, tmp_path, **{"schedule.epochs": 1})]
    cmd[cmd.index("none")] = str(Path(__file__).parent / "data" / "empty.yaml")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["world_size"] == 2
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "results.json").is_file()


def test_cli_train_eval_extract(reference_run, tiny_world, tmp_path):
    from vreid.cli.main import app

    ref_out, results, _ = reference_run
    runner = CliRunner()
    empty = str(Path(__file__).parent / "data" / "empty.yaml")
    over = tiny_overrides(tiny_world, tmp_path / "ev")
    r = runner.invoke(app, ["eval", empty, *over, "--checkpoint", str(ref_out), "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert got["mAP"] == pytest.approx(results["mAP"], abs=1e-6)
    r = runner.invoke(app, ["extract", empty, *over, "-c", str(ref_out), "-o", str(tmp_path / "f.npz"),
                            "--split", "query"])
    assert r.exit_code == 0, r.output
    import numpy as np

    z = np.load(tmp_path / "f.npz")
    assert z["query_features"].shape[0] == len(z["query_vehicle_ids"]) > 0
    r = runner.invoke(app, ["train", empty, *over, "optim.name=rmsprop"])
    assert r.exit_code == 2 and "optim.name" in r.output and "adam" in r.output
    r = runner.invoke(app, ["eval", empty, *over, "--checkpoint", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "model.safetensors" in r.output
    for cmd in (["train"], ["eval"], ["extract"], ["demo"], ["data", "check"], ["synth"]):
        r = runner.invoke(app, [*cmd, "--help"])
        assert r.exit_code == 0 and "Example" in r.output, cmd
