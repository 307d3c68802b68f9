"""Every bad input: exit != 0, one `error:` line that names the file or key and the fix, no traceback, and the
output folder left byte-identical."""
from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import tiny_overrides

EMPTY = str(Path(__file__).parent / "data" / "empty.yaml")


def digest(folder: Path) -> dict[str, str] | None:
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_camera_folder_set(root: Path, with_train: bool = False) -> Path:
    """A plain-layout dataset whose images all come from camera 0 (no query can match under VeRi rules)."""
    rng = np.random.default_rng(0)
    rows = {"train": [], "query": [], "gallery": []}
    for vid in range(4):
        for i, split in enumerate(("train", "query", "gallery", "gallery")):
            path = root / "images" / f"{vid}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
            rows[split].append((f"images/{path.name}", vid, 0))
    for split, items in rows.items():
        if split == "train" and not with_train:
            continue  # also: a folder dataset without train.csv
        with open(root / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "vehicle_id", "camera_id"])
            w.writerows(items)
    return root


@dataclass
class Case:
    name: str
    args: Callable[[dict], list[str]]
    expect: tuple[str, ...]
    folder: Callable[[dict], Path]
    setup: Callable[[dict], None] = field(default=lambda env: None)


def train(env, *extra, out=None):
    return ["train", EMPTY, *tiny_overrides(env["world"], out or env["new"]), *extra]


def evaluate(env, *extra, over=()):
    return ["eval", EMPTY, *tiny_overrides(env["world"], env["new"]), *over, "--checkpoint", str(env["run"]),
            *extra]


def write_bad_yaml(env):
    (env["tmp"] / "bad.yaml").write_text("optim:\n  weight_decay: -1\n")


def truncate_weights(env):
    """A run folder whose model.safetensors was cut short (a copy: the finished run stays intact)."""
    folder = env["tmp"] / "truncated"
    folder.mkdir(exist_ok=True)
    (folder / "model_info.json").write_bytes((env["run"] / "model_info.json").read_bytes())
    (folder / "model.safetensors").write_bytes((env["run"] / "model.safetensors").read_bytes()[:100])


def fill_eval_output(env):
    (env["tmp"] / "ev").mkdir(exist_ok=True)
    (env["tmp"] / "ev" / "results.json").write_text("{}")


CASES = [
    Case("epochs <= 0", lambda e: train(e, "schedule.epochs=0"),
         ("command-line override 'schedule.epochs=0'", ">= 1"), lambda e: e["new"]),
    Case("unknown eval.rerank", lambda e: train(e, "eval.rerank=kreciprocl"),
         ("eval.rerank", "kreciprocal"), lambda e: e["new"]),
    Case("unknown eval.protocol", lambda e: train(e, "eval.protocol=veri"),
         ("eval.protocol", "veri776"), lambda e: e["new"]),
    Case("unknown --rerank", lambda e: evaluate(e, "--rerank", "kreciprocl"),
         ("--rerank", "kreciprocal"), lambda e: e["run"]),
    Case("negative workers", lambda e: train(e, "data.workers=-1"), ("data.workers", ">= 0"), lambda e: e["new"]),
    Case("zero learning rate", lambda e: train(e, "optim.lr=0"), ("optim.lr", "> 0"), lambda e: e["new"]),
    Case("zero test batch", lambda e: train(e, "data.test_batch_size=0"), ("data.test_batch_size",),
         lambda e: e["new"]),
    Case("tiny image height", lambda e: train(e, "data.height=4"), ("data.height", ">= 16"), lambda e: e["new"]),
    Case("sbs non-local on a 1-block stage", lambda e: train(e, "model.name=sbs"),
         ("model.non_local", "layer2"), lambda e: e["new"]),
    Case("unknown backbone option", lambda e: train(e, "model.backbone.options={depth: 3}"),
         ("model.backbone.options", "depth", "remove"), lambda e: e["new"]),
    Case("missing pretrained file", lambda e: train(e, "model.backbone.pretrained=/nowhere/r50.pth"),
         ("model.backbone.pretrained", "/nowhere/r50.pth", "nothing is downloaded"), lambda e: e["new"]),
    Case("re-ranker option of another re-ranker", lambda e: evaluate(e, "--rerank", "aqe",
                                                                      over=["eval.rerank_options={k1: 3}"]),
         ("eval.rerank_options", "'k1' is not an option", "expand_gallery"), lambda e: e["run"]),
    Case("bad value in a YAML file", lambda e: ["train", str(e["tmp"] / "bad.yaml"),
                                                *tiny_overrides(e["world"], e["new"])],
         ("bad.yaml", "optim.weight_decay", ">= 0"), lambda e: e["new"], write_bad_yaml),
    Case("output_dir below a file", lambda e: train(e, out=e["run"] / "model.safetensors" / "sub"),
         ("output_dir", "not a folder"), lambda e: e["run"]),
    Case("extract -o below a file", lambda e: ["extract", EMPTY, *tiny_overrides(e["world"], e["new"]), "-c",
                                               str(e["run"]), "-o", str(e["run"] / "model.safetensors" / "f.npz")],
         ("--output", "not a folder"), lambda e: e["run"]),
    Case("folder dataset without train.csv", lambda e: train(e, "data.layout=folder",
                                                             f"data.root={e['onecam']}"),
         ("train.csv", "missing", "train split"), lambda e: e["new"]),
    Case("training into a finished run", lambda e: train(e, out=e["run"]),
         ("holds a run already", "--resume", "--overwrite"), lambda e: e["run"]),
    Case("resume without a checkpoint", lambda e: train(e, "--resume", out=e["tmp"] / "empty_run"),
         ("no intact checkpoint", "without --resume"), lambda e: e["tmp"] / "empty_run",
         lambda e: (e["tmp"] / "empty_run").mkdir(exist_ok=True)),
    Case("resume with changed settings", lambda e: train(e, "optim.lr=0.5", "--resume", out=e["run"]),
         ("config.yaml", "optim.lr", "--allow-changes"), lambda e: e["run"]),
    Case("truncated weights file", lambda e: ["eval", EMPTY, *tiny_overrides(e["world"], e["new"]),
                                              "--checkpoint", str(e["tmp"] / "truncated"),
                                              "-o", str(e["tmp"] / "ev2")],
         ("truncated/model.safetensors", "not a readable safetensors file"), lambda e: e["tmp"] / "ev2",
         truncate_weights),
    Case("eval into a folder with results", lambda e: evaluate(e, "-o", str(e["tmp"] / "ev")),
         ("--output", "--overwrite"), lambda e: e["tmp"] / "ev", fill_eval_output),
    Case("one-camera dataset", lambda e: evaluate(e, "-o", str(e["tmp"] / "ev3"),
                                                  over=["data.layout=folder", f"data.root={e['onecam']}"]),
         ("no", "match", "eval.protocol=plain_none"), lambda e: e["tmp"] / "ev3"),
    Case("training on a one-camera dataset", lambda e: train(e, "data.layout=folder", "data.ids_per_batch=2",
                                                             f"data.root={e['onecam_train']}"),
         ("none of the 4 queries has a match", "eval.protocol=plain_none"), lambda e: e["new"]),
    Case("more identities per batch than the training split has", lambda e: train(e, "data.ids_per_batch=12"),
         ("data.ids_per_batch", "has 8", "at most 8"), lambda e: e["new"]),
    *([Case("--overwrite with a device this machine lacks",
            lambda e: train(e, "train.device=cuda", "--overwrite", out=e["run"]),
            ("train.device", "cpu or auto"), lambda e: e["run"])] if not torch.cuda.is_available() else []),
    Case("bad demo world", lambda e: ["demo", "--output", str(e["new"]), "--ids", "1"],
         ("ids=1", "at least 2"), lambda e: e["new"]),
]


@pytest.fixture(scope="module")
def env(tiny_world, finished_run, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_errors")
    return {"world": tiny_world, "run": finished_run[0], "tmp": tmp, "new": tmp / "new_run",
            "onecam": one_camera_folder_set(tmp / "onecam"),
            "onecam_train": one_camera_folder_set(tmp / "onecam_train", with_train=True)}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_clear_error_and_changes_nothing(case, env):
    from vreid.cli.main import app

    case.setup(env)
    folder = case.folder(env)
    before = digest(folder)
    result = CliRunner().invoke(app, case.args(env))
    assert result.exit_code not in (0, None), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    for text in case.expect:
        assert text in errors[0], (text, errors[0])
    assert "Traceback" not in result.output
    assert digest(folder) == before


def test_the_real_command_exits_2_with_one_line_and_debug_shows_the_traceback(tmp_path):
    cmd = [sys.executable, "-m", "vreid", "train", EMPTY, "schedule.epochs=0", f"output_dir={tmp_path / 'r'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("error: ") == 1 and "Traceback" not in proc.stderr
    debug = subprocess.run([sys.executable, "-m", "vreid", "--debug", *cmd[3:]], capture_output=True, text=True,
                           timeout=120)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr
    assert not (tmp_path / "r").exists()


def test_os_errors_name_the_file_and_the_fix():
    import errno

    from vreid.cli.errors import describe

    message, code = describe(OSError(errno.ENOSPC, "No space left on device", "/runs/x/model.safetensors"))
    assert code == 2 and "/runs/x/model.safetensors" in message and "free some space" in message
    message, _ = describe(PermissionError(errno.EACCES, "Permission denied", "/runs"))
    assert "/runs" in message and "folder you can write to" in message
    assert describe(ZeroDivisionError("a bug")) is None  # bugs keep their traceback
