"""`vreid visualize`: the ranked-list HTML report of a finished run or an evaluation folder."""
from __future__ import annotations

from typing import Optional

import typer

from vreid.cli.common import console


def register(app: typer.Typer) -> None:
    @app.command("visualize", epilog="Example: vreid visualize runs/bot -o runs/bot/report.html")
    def visualize(
        folder: str = typer.Argument(..., help="Training run folder (after its final evaluation) or an "
                                               "evaluation folder (vreid eval -o FOLDER)"),
        overrides: Optional[list[str]] = typer.Argument(None, help="KEY=VALUE overrides of the folder's "
                                                        "config.yaml, e.g. data.root=/moved/dataset"),
        output: Optional[str] = typer.Option(None, "--output", "-o", help="HTML file (default FOLDER/report.html)"),
        queries: int = typer.Option(6, "--queries", min=1, help="How many queries to show"),
    ) -> None:
        """Draw metrics, CMC curve and ranked galleries of a few queries from results.json and ranked.npz; for a
        run whose method has attention maps (e.g. musp), also those maps over the same queries."""
        from vreid.viz.folder_report import write_folder_report

        console.print(f"report: {write_folder_report(folder, output, overrides or [], queries)}")
