"""`vreid config show`: the resolved config (file or packaged name, plus overrides) as YAML; nothing runs."""
from __future__ import annotations

from typing import Optional

import typer

from vreid.cli.common import load_config


def register(app: typer.Typer) -> None:
    config_app = typer.Typer(help="Inspect experiment configs.", no_args_is_help=True)
    app.add_typer(config_app, name="config")

    @config_app.command("show", epilog="Example: vreid config show bot/synthetic data.root=data/synth optim.lr=1e-3")
    def show(
        config: str = typer.Argument(..., help="YAML file or packaged config name (see `vreid configs`)"),
        overrides: Optional[list[str]] = typer.Argument(None, help="KEY=VALUE overrides, e.g. schedule.epochs=10"),
    ) -> None:
        """Print CONFIG with its _base_ files, defaults and overrides applied, as a run would use it."""
        from vreid.engine.run_info import config_yaml

        # plain echo, not rich: the YAML must stay exact when piped into a file
        typer.echo(config_yaml(load_config(config, overrides)), nl=False)
