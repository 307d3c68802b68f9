"""One run per output folder: refuse to mix two runs, lock out a second process, compare settings on resume."""
from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from vreid.config.loader import ConfigError, flatten_mapping

#: Files and folders a training run writes; their presence means the folder holds a run.
RUN_OUTPUTS = ("config.yaml", "run_info.json", "checkpoints", "model.safetensors", "model_info.json",
               "metrics.csv", "tensorboard", "results.json", "ranked.npz", "clusters.csv", "report.html")
#: Sections whose change alters what a resumed run means; `data.*` keys in RESUME_FREE may still change.
RESUME_FIXED = ("seed", "data", "model", "optim", "schedule")
RESUME_FREE = ("data.root", "data.workers", "data.test_batch_size")


def holds_run(folder: str | os.PathLike) -> bool:
    folder = Path(folder)
    return any((folder / name).exists() for name in RUN_OUTPUTS)


def check_new_run(folder: str | os.PathLike, resume: bool, overwrite: bool) -> None:
    """A fresh run may not land in a folder that holds one, unless the user says to continue or replace it."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: give one of them")
    if not resume and not overwrite and holds_run(folder):
        raise ConfigError(f"output_dir {folder}: holds a run already (config.yaml, checkpoints, ...); pass "
                          "--resume to continue it, --overwrite to replace it, or choose another output_dir=",
                          key="output_dir")


def clear_run_outputs(folder: str | os.PathLike) -> None:
    """Remove what an earlier run wrote (only vreid's own outputs; anything else in the folder stays)."""
    folder = Path(folder)
    for name in RUN_OUTPUTS + ("eval",):
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def resume_differences(saved: dict[str, Any], given: dict[str, Any]) -> list[str]:
    """'key: saved -> given' for every setting that changes the run's meaning."""
    old, new = flatten_mapping(saved), flatten_mapping(given)
    out = []
    for key in sorted(set(old) | set(new)):
        if key.split(".")[0] not in RESUME_FIXED or key in RESUME_FREE:
            continue
        if old.get(key) != new.get(key):
            out.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return out


def saved_config(folder: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(folder) / "config.yaml"
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def check_resume_settings(folder: str | os.PathLike, given: dict[str, Any], allow_changes: bool) -> list[str]:
    """The differences between the run's saved config and the given one; refused unless `allow_changes`."""
    saved = saved_config(folder)
    if saved is None:
        return []
    changes = resume_differences(saved, given)
    if changes and not allow_changes:
        listed = "; ".join(changes[:12]) + (f"; ... ({len(changes) - 12} more)" if len(changes) > 12 else "")
        raise ConfigError(f"{Path(folder) / 'config.yaml'}: --resume with settings that differ from the run's own "
                          f"({listed}); drop those overrides to continue the run as it was, or pass "
                          "--allow-changes to continue with them (they are recorded in run_info.json)")
    return changes


class RunLock:
    """An advisory lock on a run folder, held while one process trains into it.

    The lock is taken on the folder itself (flock on its descriptor), so taking it writes nothing there.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"output_dir {self.folder}: in use by another vreid process; wait for it to "
                              "finish, or choose another output_dir=", key="output_dir") from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
