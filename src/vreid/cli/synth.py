"""`vreid synth`: render the synthetic vehicle world in an official dataset layout, or a contact sheet of it."""
from __future__ import annotations

from typing import Optional

import typer

EXAMPLE = ("Examples:\n\n"
           "  vreid synth data/synth --layout veri776 --ids 200 --cameras 8 --preset hard --size 128\n\n"
           "  vreid synth --preview docs/img/synth_preview.png --preset hard")


def register(app: typer.Typer) -> None:
    @app.command("synth", epilog=EXAMPLE)
    def synth(
        out: Optional[str] = typer.Argument(None, help="Dataset folder to write (must be empty or absent)"),
        layout: str = typer.Option("veri776", help="veri776 | vehicleid | veriwild | folder"),
        ids: int = typer.Option(200, help="Vehicles in the world (train + test)"),
        cameras: int = typer.Option(8, help="Cameras in the world"),
        seed: int = typer.Option(0, help="World seed: same seed, same bytes"),
        preset: str = typer.Option("medium", help="Synthetic world preset: easy | medium | hard | crossview (docs/synthetic.md)"),
        size: int = typer.Option(128, help="Long side of each image in pixels"),
        workers: int = typer.Option(2, help="Worker processes (0: render in this process)"),
        preview: Optional[str] = typer.Option(None, help="Also (or only) write a PNG contact sheet: rows = "
                                                        "vehicles, columns = cameras"),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty OUT"),
    ) -> None:
        """Render the synthetic vehicle world (numpy + Pillow, CPU) as a Re-ID dataset."""
        from rich.console import Console

        from vreid.synth import SynthConfig, render_dataset, write_preview

        console, err = Console(), Console(stderr=True)
        if out is None and preview is None:
            err.print("[red]error:[/red] give an output folder OUT, --preview PNG, or both")
            raise typer.Exit(2)
        try:
            cfg = SynthConfig(ids=ids, cameras=cameras, seed=seed, preset=preset, size=size, layout=layout,
                              workers=workers, overwrite=overwrite)
            if preview is not None:
                console.print(f"contact sheet: {write_preview(preview, cfg)}")
            if out is not None:
                s = render_dataset(out, cfg)
                console.print(f"{s['layout']} layout in {s['root']}: {s['images']} images "
                              f"({s['train_ids']} train ids, {s['test_ids']} test ids, {s['cameras']} cameras; "
                              f"train {s['train']}, query {s['query']}, gallery {s['gallery']}) "
                              f"in {s['seconds']:.1f} s ({s['images_per_s']:.0f} images/s)")
        except (ValueError, FileExistsError) as e:
            err.print(f"[red]error:[/red] {e}", highlight=False)
            raise typer.Exit(2)
