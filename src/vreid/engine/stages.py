"""Multi-stage runs: a method that needs earlier trainings (a VAE before SAVER's Re-ID model, ...) declares them as
stages; one `vreid train` runs them in order into one folder.

    <run>/config.yaml, run_info.json   the config as given (what --resume compares against)
    <run>/stages.json                  the stages in order and those finished
    <run>/stages/<name>/               each stage: a normal run folder (checkpoints, resumable, locked)
    <run>/model.safetensors, ...       the last stage's model, results and pictures, so <run> is used like any run

A method declares its stages with a classmethod `training_stages(cfg) -> list[Stage]` (none: a plain run). Each
Stage turns the whole config, and the folders of the stages before it, into that stage's config; that is how a
stage hands its output to the next. The trainer knows nothing of this: every stage is one ordinary training run.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from rich.console import Console

from vreid.config.loader import ConfigError
from vreid.config.schema import ExperimentConfig
from vreid.engine.checkpoint import latest_checkpoint
from vreid.engine.run_folder import (
    RunLock, check_new_run, check_resume_settings, clear_run_outputs, holds_run,
)
from vreid.engine.run_info import write_run_info
from vreid.fileio import atomic_path, write_json_atomic
from vreid.launch import launched_as_main

console = Console(stderr=True)

#: What the last stage's folder hands up to the run folder (plus its top-level pictures, *.png).
PUBLISHED = ("model.safetensors", "model_info.json", "results.json", "ranked.npz")
STATE_FILE = "stages.json"


@dataclass(frozen=True)
class Stage:
    """One training of a multi-stage run.

    `configure(cfg, earlier)`: the stage's config from the run's config (a copy it may change) and the folders of
    the finished stages before it, by name. Its output_dir is set by the runner to `<run>/stages/<name>`.
    """

    name: str
    configure: Callable[[ExperimentConfig, Mapping[str, Path]], ExperimentConfig]


#: train_one(cfg, resume=, dataset=, overwrite=, allow_changes=) -> results: one ordinary run (run.py's)
TrainOne = Callable[..., dict[str, Any]]


def method_stages(cfg: ExperimentConfig) -> list[Stage]:
    """The stages `cfg`'s method declares for these settings; [] for a single-stage method."""
    from vreid.methods import METHODS

    stages = list(METHODS.get(cfg.model.name).training_stages(cfg))
    names = [s.name for s in stages]
    if len(set(names)) != len(names) or any(not n or os.sep in n or n.startswith(".") for n in names):
        raise ValueError(f"method {cfg.model.name!r} declares stages with bad or repeated names: {names}")
    return stages


def stage_folder(root: str | os.PathLike, name: str) -> Path:
    return Path(root) / "stages" / name


def holds_pipeline(root: str | os.PathLike) -> bool:
    root = Path(root)
    return holds_run(root) or (root / STATE_FILE).exists() or (root / "stages").exists()


def clear_pipeline(root: str | os.PathLike) -> None:
    """Remove what an earlier multi-stage run wrote into `root` (only vreid's outputs)."""
    root = Path(root)
    clear_run_outputs(root)
    for path in (root / "stages", root / STATE_FILE):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    for png in root.glob("*.png"):
        png.unlink()


def _read_state(root: Path) -> dict[str, Any]:
    import json

    path = root / STATE_FILE
    try:
        state = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        state = {}
    return {"stages": list(state.get("stages", [])), "done": list(state.get("done", []))}


def _publish(final: Path, root: Path) -> None:
    """Copy the last stage's model and results into the run folder (each file atomically; the weights last, so a
    run folder with model.safetensors always has the rest)."""
    names = [n for n in PUBLISHED if (final / n).is_file()]
    names = sorted(p.name for p in final.glob("*.png")) + [n for n in names if n != "model.safetensors"] + \
        [n for n in names if n == "model.safetensors"]
    for name in names:
        with atomic_path(root / name) as tmp:
            shutil.copyfile(final / name, tmp)


def _same_images(a: ExperimentConfig, b: ExperimentConfig) -> bool:
    return (a.data.root, a.data.layout, a.data.test_size) == (b.data.root, b.data.layout, b.data.test_size)


def run_stages(cfg: ExperimentConfig, stages: list[Stage], train_one: TrainOne, resume: bool = False,
               dataset: Any = None, overwrite: bool = False, allow_changes: bool = False) -> dict[str, Any]:
    """Run `stages` in order into `cfg.output_dir`; with `resume`, finished stages are skipped and the stopped one
    continues from its newest checkpoint. Returns the last stage's results."""
    root = Path(cfg.output_dir)
    main = launched_as_main()

    def check_folder() -> list[str]:
        check_new_run(root, resume, overwrite)  # --resume with --overwrite; a plain run's files in the way
        if not resume and not overwrite and holds_pipeline(root):
            raise ConfigError(f"output_dir {root}: holds a multi-stage run already ({STATE_FILE}, stages/); pass "
                              "--resume to continue it, --overwrite to replace it, or choose another output_dir=",
                              key="output_dir")
        return check_resume_settings(root, dataclasses.asdict(cfg), allow_changes) if resume else []

    if main:
        check_folder()
    lock = RunLock(root).acquire() if main else None
    try:
        changes = check_folder() if main else []
        if overwrite and main:
            clear_pipeline(root)
        names = [s.name for s in stages]
        state = _read_state(root) if resume else {"stages": names, "done": []}
        if main:
            write_run_info(root, cfg, cfg.seed, {"stages": names, **({"changes_on_resume": changes} if changes
                                                                         else {})})
            write_json_atomic(root / STATE_FILE, {"stages": names, "done": state["done"]})
        earlier: dict[str, Path] = {}
        results: dict[str, Any] = {}
        for stage in stages:
            folder = stage_folder(root, stage.name)
            stage_cfg = stage.configure(copy.deepcopy(cfg), dict(earlier))
            stage_cfg.output_dir = str(folder)
            if stage.name in state["done"]:
                console.print(f"stage {stage.name}: finished earlier, skipped ({folder})", highlight=False)
                results = {}
            else:
                started = holds_run(folder)
                resumable = started and latest_checkpoint(folder / "checkpoints") is not None
                console.print(f"stage {stage.name} ({names.index(stage.name) + 1}/{len(names)}): "
                              f"{'resumed' if resumable else 'started'} in {folder}", highlight=False)
                results = train_one(stage_cfg, resume=resumable, overwrite=started and not resumable,
                                    dataset=dataset if _same_images(stage_cfg, cfg) else None,
                                    allow_changes=allow_changes)
                state["done"].append(stage.name)
                if main:
                    write_json_atomic(root / STATE_FILE, {"stages": names, "done": state["done"]})
            earlier[stage.name] = folder
        final = stage_folder(root, stages[-1].name)
        if main:
            _publish(final, root)
        if not results and (root / "results.json").is_file():
            import json

            results = json.loads((root / "results.json").read_text())
        return results
    finally:
        if lock is not None:
            lock.release()


__all__ = ["Stage", "method_stages", "run_stages", "stage_folder", "holds_pipeline", "clear_pipeline"]
