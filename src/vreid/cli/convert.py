"""`vreid convert`: an official checkpoint of another toolkit (FastReID, ...) -> a vreid run folder."""
from __future__ import annotations

from typing import Optional

import typer

from vreid.cli.common import console, load_config

#: Every source (vreid.convert.CONVERTERS), spelt out so `vreid --help` need not import torch; a test keeps it true.
SOURCE_NAMES = ("fastreid", "hpgn", "hrcn", "mbr", "musp")


def register(app: typer.Typer) -> None:
    @app.command(
        "convert",
        epilog="Example: vreid convert --from fastreid veri_sbs_R50-ibn.pth --config configs/sbs/veri776.yaml "
               "-o runs/fastreid-sbs-veri",
    )
    def convert(
        checkpoint: str = typer.Argument(..., help="The source toolkit's checkpoint file (.pth)"),
        overrides: Optional[list[str]] = typer.Argument(None, help="KEY=VALUE overrides of the config's model"),
        source: str = typer.Option(..., "--from", help=" | ".join(SOURCE_NAMES)),
        config: str = typer.Option(..., "--config", help="vreid YAML experiment file whose model the checkpoint "
                                                         "fills (its data height/width become the run's)"),
        output: str = typer.Option(..., "--output", "-o", help="Run folder to write (model.safetensors, "
                                                                "model_info.json)"),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run already in --output"),
    ) -> None:
        """Convert an official checkpoint into a run folder that `vreid eval` / `vreid extract` use like any run.

        Every weight must find its place: missing or left-over tensors are an error that lists them.
        """
        from vreid.convert.run import convert_checkpoint

        cfg = load_config(config, overrides)
        report = convert_checkpoint(source, checkpoint, cfg, output, overwrite=overwrite)
        pre = report.preprocessing
        console.print(f"converted {report.tensors} tensors of {checkpoint} ({source}) into {cfg.model.name}",
                      highlight=False, soft_wrap=True)
        console.print(f"preprocessing: {cfg.data.height}x{cfg.data.width}, mean "
                      f"{[round(v, 4) for v in pre.mean]}, std {[round(v, 4) for v in pre.std]} "
                      f"(from {pre.origin})", highlight=False, soft_wrap=True)
        for note in report.notes:
            console.print(f"note: {note}", highlight=False, soft_wrap=True)
        console.print(f"run folder {report.output_dir}; evaluate it with: vreid eval {config} "
                      f"data.root=... -c {report.output_dir}", highlight=False, soft_wrap=True)
