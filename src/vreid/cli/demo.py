"""`vreid demo`."""
from __future__ import annotations

from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo", epilog="Example: vreid demo --output runs/demo --ids 160 --cameras 8")
    def demo(
        output: str = typer.Option("runs/demo", "--output", "-o", help="Folder for data, run and report.html"),
        config: str = typer.Option("bot/synthetic", "--config",
                                    help="Training config for bot: a packaged name (vreid configs) or a YAML file"),
        ids: int = typer.Option(160, help="Vehicles in the synthetic world (train + test)"),
        cameras: int = typer.Option(8, help="Cameras in the synthetic world"),
        preset: str = typer.Option("crossview", help="Synthetic world preset: easy | medium | hard | crossview (docs/synthetic.md)"),
        size: int = typer.Option(64, help="Rendered image size in pixels"),
        seed: int = typer.Option(0, help="Seed for the world and the training run"),
        overrides: Optional[list[str]] = typer.Argument(None, help="KEY=VALUE overrides for the training config"),
    ) -> None:
        """Render a small synthetic dataset, train bot on CPU, evaluate, print a table and write report.html."""
        from vreid.demo import DemoSettings, run_demo

        run_demo(DemoSettings(output=output, config=config, ids=ids, cameras=cameras, preset=preset,
                              size=size, seed=seed), overrides)
