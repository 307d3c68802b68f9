"""The `vreid` command: thin wrappers over the library (vreid.engine.run, vreid.data, vreid.synth, ...)."""
from __future__ import annotations

import importlib

import typer

from vreid.cli.errors import DEBUG, ErrorReportingGroup

app = typer.Typer(
    name="vreid",
    cls=ErrorReportingGroup,
    help="Vehicle re-identification: train, evaluate, extract, check data, render the synthetic world, demo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        import vreid

        typer.echo(f"vreid {vreid.__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error"),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit"),
) -> None:
    """Vehicle re-identification: train, evaluate, extract, check data, render the synthetic world, demo."""
    DEBUG["on"] = debug


#: CLI modules; each defines register(app) adding its commands.
COMMAND_MODULES = ("vreid.cli.jobs", "vreid.cli.data", "vreid.cli.synth", "vreid.cli.demo", "vreid.cli.configs",
                   "vreid.cli.config_show", "vreid.cli.visualize", "vreid.cli.convert", "vreid.cli.export",
                   "vreid.cli.index", "vreid.cli.search", "vreid.cli.serve")

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover - `python -m vreid.cli.main` (e.g. under torchrun)
    main()
