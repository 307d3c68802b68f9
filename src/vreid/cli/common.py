"""Shared CLI plumbing: config loading with overrides, and turning vreid errors into clean messages."""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from rich.console import Console

from vreid.config import ConfigError, ExperimentConfig, load_experiment

console = Console()
err_console = Console(stderr=True)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types whose message is already a complete instruction for the user (no traceback)."""
    from vreid.engine.checkpoint import CheckpointError
    from vreid.registry import RegistryError

    errors: list[type[BaseException]] = [ConfigError, CheckpointError, RegistryError, FileNotFoundError]
    try:
        from vreid.data.errors import DatasetError

        errors.append(DatasetError)
    except ImportError:
        pass
    try:
        from vreid.models.weights import WeightsError

        errors.append(WeightsError)
    except ImportError:
        pass
    return tuple(errors)


@contextlib.contextmanager
def clean_errors() -> Iterator[None]:
    try:
        yield
    except user_errors() as e:
        err_console.print(f"[red]error:[/red] {e}", highlight=False)
        sys.exit(2)


def load_config(config: str | None, overrides: list[str] | None) -> ExperimentConfig:
    return load_experiment(config, overrides or [])
