"""`vreid export onnx`: a run's embedding model as an ONNX file, checked against PyTorch before it is written."""
from __future__ import annotations

from typing import Optional

import typer

from vreid.cli.common import console, err_console


def register(app: typer.Typer) -> None:
    export_app = typer.Typer(help="Export trained models for serving.", no_args_is_help=True)
    app.add_typer(export_app, name="export")

    @export_app.command(
        "onnx",
        epilog="Example: vreid export onnx runs/bot-synthetic -o runs/bot-synthetic/model.onnx",
    )
    def onnx(
        run: str = typer.Argument(..., help="Run folder of `vreid train` (or a checkpoint folder of one)"),
        output: str = typer.Option(..., "--output", "-o", help="The .onnx file to write"),
        images: Optional[str] = typer.Option(None, "--images", help="Folder of images for the parity check "
                                             "(default: the run's data.root, else a rendered synthetic world)"),
        tolerance: float = typer.Option(1e-4, "--tolerance", help="Largest absolute difference between PyTorch "
                                        "and onnxruntime embeddings accepted"),
        opset: int = typer.Option(17, "--opset", help="ONNX opset version"),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file"),
    ) -> None:
        """Export what the run embeds (normalisation left outside, declared in the metadata) with a dynamic
        batch axis; the file is written only if PyTorch and onnxruntime agree on real images."""
        from vreid.export.to_onnx import export_onnx

        report = export_onnx(run, output, images=images, tolerance=tolerance, opset=opset, overwrite=overwrite,
                             log=lambda line: err_console.print(line, highlight=False, soft_wrap=True))
        console.print(f"wrote {report.path}: inputs {', '.join(report.inputs)}, embedding dim {report.embedding_dim}, "
                      f"max abs difference {report.max_abs_diff:.3g}, min cosine {report.min_cosine:.8f} "
                      f"({report.seconds:.1f} s)", highlight=False, soft_wrap=True)
