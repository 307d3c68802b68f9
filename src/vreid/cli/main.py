"""The `vreid` command: thin wrappers over the library (vreid.engine.run, vreid.data, vreid.synth, ...)."""
from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="vreid",
    help="Vehicle re-identification: train, evaluate, extract, check data, render the synthetic world, demo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: CLI modules; each defines register(app) adding its commands.
COMMAND_MODULES = ("vreid.cli.jobs", "vreid.cli.data", "vreid.cli.synth", "vreid.cli.demo")

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover - `python -m vreid.cli.main` (e.g. under torchrun)
    main()
