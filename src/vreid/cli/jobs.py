"""`vreid train`, `vreid eval`, `vreid extract`."""
from __future__ import annotations

from typing import Optional

import typer

from vreid.cli.common import console, load_config, override_keys

#: Every re-ranker (vreid.rerank.RERANKERS), spelt out so `vreid --help` need not import torch; a test keeps it true.
RERANK_NAMES = ("none", "kreciprocal", "sparse", "aqe", "alpha_qe", "fastreid_aqe", "contextual")

#: Every metric name (vreid.eval.selection.EVAL_METRICS), spelt out for the same reason; a test keeps it true.
METRIC_NAMES = ("map", "cmc", "minp", "cgm", "roc")


def register(app: typer.Typer) -> None:
    @app.command(
        "train",
        epilog="Example: vreid train configs/bot/synthetic.yaml data.root=data/synth output_dir=runs/bot optim.lr=3.5e-4",
    )
    def train(
        config: str = typer.Argument(..., help="YAML experiment file, e.g. configs/bot/veri776.yaml, or the "
                                               "folder of a run (its config.yaml) to --resume it"),
        overrides: Optional[list[str]] = typer.Argument(None, help="KEY=VALUE overrides, e.g. schedule.epochs=10"),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in output_dir from its newest "
                                    "intact checkpoint"),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run already in output_dir"),
        allow_changes: bool = typer.Option(False, "--allow-changes", help="With --resume: accept settings that "
                                           "differ from the run's config.yaml (recorded in run_info.json)"),
    ) -> None:
        """Train a method; writes weights, checkpoints, metrics and the resolved config to output_dir."""
        from vreid.engine.run import run_training
        from vreid.viz.table import print_results

        cfg = load_config(config, overrides)
        results = run_training(cfg, resume=resume, overwrite=overwrite, allow_changes=allow_changes)
        if results.get("mAP") is not None:
            print_results(results, title=f"{cfg.model.name} on {cfg.data.layout}", console=console)
        console.print(f"outputs in {cfg.output_dir}")

    @app.command(
        "eval",
        epilog="Example: vreid eval configs/bot/veri776.yaml data.root=/data/VeRi --checkpoint runs/bot --rerank kreciprocal",
    )
    def evaluate(
        config: str = typer.Argument(..., help="YAML experiment file (its data and eval sections are used)"),
        overrides: Optional[list[str]] = typer.Argument(None, help="KEY=VALUE overrides"),
        checkpoint: str = typer.Option(..., "--checkpoint", "-c", help="Run folder, checkpoint folder or .safetensors"),
        rerank: Optional[str] = typer.Option(None, "--rerank", help=" | ".join(RERANK_NAMES)),
        rerank_model: Optional[str] = typer.Option(None, "--rerank-model", help="With --rerank contextual: the "
                                                   "rerank_net run folder (sets eval.rerank_options.model)"),
        output: Optional[str] = typer.Option(None, "--output", "-o", help="Folder for results.json and ranked lists "
                                             "(default: a new folder <run>/eval/<time>-<rerank>)"),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace the results already in --output"),
        as_json: bool = typer.Option(False, "--json", help="Print the results as JSON"),
        metrics: Optional[str] = typer.Option(None, "--metrics", help="Comma-separated, sets eval.metrics: "
                                              + ", ".join(METRIC_NAMES) + " (e.g. map,cmc,roc)"),
    ) -> None:
        """Evaluate trained weights under the dataset's protocol (CMC, mAP, mINP; --metrics adds CGM, ROC).

        The model's own preprocessing (size, mean, std in its model_info.json) is used unless set on the command
        line; every difference from the config is printed.
        """
        import json

        from vreid.cli.errors import err_console
        from vreid.engine.run import run_evaluation
        from vreid.viz.table import print_results

        if metrics is not None:  # as an override, so that a wrong name is reported like any config value
            names = [name.strip() for name in metrics.split(",") if name.strip()]
            overrides = [*(overrides or []), f"eval.metrics={json.dumps(names)}"]
        if rerank_model is not None:
            overrides = [*(overrides or []), f"eval.rerank_options.model={json.dumps(rerank_model)}"]
        cfg = load_config(config, overrides)
        results = run_evaluation(cfg, checkpoint, rerank=rerank, output_dir=output, overwrite=overwrite,
                                 explicit=override_keys(overrides))
        if as_json:
            console.print_json(json.dumps(results, default=float))
        else:
            print_results(results, title=f"{cfg.data.layout} ({results.get('protocol', '')})", console=console)
        err_console.print(f"results in {results['output_dir']}", highlight=False, soft_wrap=True)

    @app.command(
        "extract",
        epilog="Example: vreid extract configs/bot/synthetic.yaml data.root=data/synth -c runs/bot -o feats.npz --split query",
    )
    def extract(
        config: str = typer.Argument(..., help="YAML experiment file (data section is used)"),
        overrides: Optional[list[str]] = typer.Argument(None, help="KEY=VALUE overrides"),
        checkpoint: str = typer.Option(..., "--checkpoint", "-c", help="Run folder, checkpoint folder or .safetensors"),
        output: str = typer.Option(..., "--output", "-o", help="Output .npz (features, vehicle ids, camera ids, paths)"),
        split: str = typer.Option("all", "--split", help="train | query | gallery | all"),
    ) -> None:
        """Embed images to features and save them with their ids, cameras and paths."""
        from vreid.engine.run import run_extraction

        if split not in ("train", "query", "gallery", "all"):
            raise typer.BadParameter("--split must be train, query, gallery or all")
        cfg = load_config(config, overrides)
        counts = run_extraction(cfg, checkpoint, output, split=split, explicit=override_keys(overrides))
        console.print(f"wrote {output}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
