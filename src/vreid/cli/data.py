"""`vreid data check`: list every problem with a dataset on disk, or its counts when it is clean."""
from __future__ import annotations

from typing import Optional

import typer

from vreid.cli.common import console, err_console


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Inspect datasets on disk.", no_args_is_help=True)
    app.add_typer(data_app, name="data")

    @data_app.command(
        "check",
        epilog="Example: vreid data check /data/VeRi --layout veri776",
    )
    def check(
        root: str = typer.Argument(..., help="Dataset root folder"),
        layout: str = typer.Option(..., "--layout", "-l", help="veri776 | vehicleid | veriwild | folder"),
        test_size: Optional[int] = typer.Option(None, "--test-size", help="VehicleID 800/1600/2400, VeRi-Wild "
                                                "3000/5000/10000"),
        verify_images: bool = typer.Option(True, "--verify-images/--no-verify-images",
                                           help="Open every image with PIL (slower) or only check it exists"),
        limit: int = typer.Option(200, "--limit", help="Print at most this many problems (0 = all)"),
    ) -> None:
        """Parse ROOT as LAYOUT and list every problem (file, what is wrong, the fix); exit 1 if there are any."""
        from rich.table import Table

        from vreid.data.check import inspect_dataset, viewpoint_counts
        from vreid.data.errors import format_problems

        ds, problems = inspect_dataset(root, layout, test_size, verify_images=verify_images)
        if problems:
            err_console.print(f"[red]{len(problems)} problem(s)[/red] in {ds.root} (layout {layout}):",
                              highlight=False, soft_wrap=True)
            err_console.print(format_problems(problems, limit=limit or None), highlight=False, markup=False,
                              soft_wrap=True)
            raise typer.Exit(1)
        console.print(f"{ds.root}: layout {layout}, protocol {ds.protocol}"
                      + (f", test size {ds.info['test_size']}" if ds.info.get("test_size") else ""),
                      highlight=False, soft_wrap=True)
        table = Table()
        for col in ("split", "ids", "cameras", "images"):
            table.add_column(col, justify="left" if col == "split" else "right")
        for split, c in ds.summary().items():
            table.add_row(split, str(c["ids"]), str(c["cameras"]), str(c["images"]))
        console.print(table)
        counts = ", ".join(f"{split} {n}/{total}" for split, (n, total) in viewpoint_counts(ds).items())
        console.print(f"images with a viewpoint: {counts}", highlight=False)
        if ds.info.get("orientation_unlisted"):
            console.print(f"orientation lines for images no list holds (left out): {ds.info['orientation_unlisted']}",
                          highlight=False)
        if ds.info.get("side_labels"):
            console.print(f"side labels (vreid_labels.csv) matched {ds.info['side_labels']} images")
        console.print("[green]no problems found[/green]")
