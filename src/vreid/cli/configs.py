"""`vreid configs`: the experiment configs shipped with vreid, usable by name from any folder."""
from __future__ import annotations

import typer

from vreid.cli.common import console


def register(app: typer.Typer) -> None:
    @app.command("configs", epilog="Example: vreid configs, then vreid train bot/synthetic data.root=data/synth")
    def configs() -> None:
        """List the packaged configs (name, method, layout); pass a name wherever a config file goes."""
        from rich.table import Table

        from vreid.config.catalog import packaged_configs
        from vreid.config.loader import read_yaml

        table = Table(title="packaged configs", caption="use a name wherever a config path goes, "
                      "e.g. vreid config show bot/synthetic; '-' means the file does not set it (a _base_ part)")
        for column in ("name", "method", "layout"):
            table.add_column(column)
        for name, path in packaged_configs().items():
            data = read_yaml(path)
            table.add_row(name, str(data.get("model", {}).get("name", "-")),
                          str(data.get("data", {}).get("layout", "-")))
        console.print(table)
