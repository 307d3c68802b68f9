"""What every run writes next to its outputs: resolved config, package versions, git revision, seed, and the CPU
thread count (float sums change order with it, so a seed reproduces exactly only at the same count)."""
from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from vreid.fileio import write_json_atomic, write_text_atomic

PACKAGES = ("vreid", "torch", "torchvision", "timm", "numpy", "faiss-cpu", "open_clip_torch", "scikit-learn", "pillow")


def package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_revision(path: str | Path = ".") -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                               capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return "unknown"
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_threads() -> dict[str, Any]:
    import torch

    return {"torch": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


def config_yaml(cfg: Any) -> str:
    data = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    return yaml.safe_dump(data, sort_keys=False)


def write_run_info(output_dir: str | Path, cfg: Any, seed: int, extra: dict[str, Any] | None = None) -> None:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output_dir / "config.yaml", config_yaml(cfg))
    write_json_atomic(
        output_dir / "run_info.json",
        {"seed": seed, "versions": package_versions(), "git": git_revision(Path(__file__).parent),
         "threads": cpu_threads(), "argv": sys.argv, **(extra or {})},
    )
