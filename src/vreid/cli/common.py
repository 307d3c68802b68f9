"""Shared CLI plumbing: consoles and config loading with overrides (errors are handled in vreid.cli.errors)."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console

from vreid.config import ExperimentConfig, load_experiment
from vreid.config.loader import parse_override
from vreid.launch import launched_as_main

#: Results go to stdout once: under torchrun only rank 0 prints them (errors still print on every rank).
console = Console(quiet=not launched_as_main())
err_console = Console(stderr=True)


def load_config(config: str | None, overrides: list[str] | None) -> ExperimentConfig:
    """The experiment from a YAML file (or packaged name), or from a run folder's saved config.yaml."""
    overrides = list(overrides or [])
    if config is not None and Path(config).is_dir() and (Path(config) / "config.yaml").is_file():
        if "output_dir" not in override_keys(overrides):  # the run lives here, wherever its config said
            overrides.insert(0, f"output_dir={config}")
        config = str(Path(config) / "config.yaml")
    return load_experiment(config, overrides)


def override_keys(overrides: list[str] | None) -> list[str]:
    """The dotted keys that KEY=VALUE overrides set (what the user asked for explicitly)."""
    return [".".join(parse_override(text)[0]) for text in overrides or []]
