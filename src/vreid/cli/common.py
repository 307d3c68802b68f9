"""Shared CLI plumbing: consoles and config loading with overrides (errors are handled in vreid.cli.errors)."""
from __future__ import annotations

from rich.console import Console

from vreid.config import ExperimentConfig, load_experiment

console = Console()
err_console = Console(stderr=True)


def load_config(config: str | None, overrides: list[str] | None) -> ExperimentConfig:
    return load_experiment(config, overrides or [])
