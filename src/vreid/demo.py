"""The demo job: render a small synthetic world, train `bot` on CPU (ImageNet start and scratch on the same split),
evaluate, and write report.html."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vreid.config import load_experiment
from vreid.fileio import write_json_atomic


@dataclass
class DemoSettings:
    output: str = "runs/demo"
    config: str = "bot/synthetic"
    ids: int = 160
    cameras: int = 8
    preset: str = "crossview"
    size: int = 64
    seed: int = 0
    workers: int = 2


def demo_world(s: DemoSettings):
    from vreid.synth import SynthConfig

    return SynthConfig(ids=s.ids, cameras=s.cameras, seed=s.seed, preset=s.preset, size=s.size,
                       layout="veri776", workers=s.workers)


def rendered_world(root: Path) -> dict[str, Any] | None:
    """The world settings a rendered dataset records in vreid_synth.json (None if absent or unreadable)."""
    import json

    try:
        return json.loads((root / "vreid_synth.json").read_text())["config"]
    except (OSError, ValueError, KeyError):
        return None


def render_demo_data(root: Path, s: DemoSettings) -> dict[str, Any]:
    """Reuse the world in `root` only if it was rendered with these settings; else render it (replacing it)."""
    import json

    from vreid.synth import render_dataset

    cfg = demo_world(s)
    wanted = json.loads(json.dumps({k: v for k, v in vars(cfg).items() if k not in ("workers", "overwrite")}))
    if (root / "vreid_labels.csv").is_file() and rendered_world(root) == wanted:
        return {"reused": str(root)}
    return render_dataset(root, cfg, overwrite=True)


def random_ranking_results(dataset, cfg, seed: int = 0) -> dict[str, Any]:
    """What a random ranking scores on the same split: random features through the same protocol."""
    from vreid.engine.evaluate import evaluate_split

    g = torch.Generator().manual_seed(seed)
    qf = torch.randn(len(dataset.query), 64, generator=g)
    gf = torch.randn(len(dataset.gallery), 64, generator=g)
    return evaluate_split(qf, gf, dataset, cfg, rerank="none")


def run_demo(s: DemoSettings, overrides: list[str] | None = None) -> dict[str, Any]:
    from vreid.engine.bundle import load_bundle
    from vreid.engine.extract import extract_features
    from vreid.engine.run import load_data, run_training
    from vreid.viz.report import ranked_gallery, write_report
    from vreid.viz.table import results_table
    from rich.console import Console

    from vreid.engine.preflight import preflight

    console = Console()
    out = Path(s.output)
    demo_world(s)  # bad world settings fail here, before anything is rendered
    cfg = load_experiment(s.config, [f"data.root={out / 'data'}", f"output_dir={out / 'bot'}",
                                     f"seed={s.seed}", *(overrides or [])])
    preflight(cfg, "train", check_data=False)
    t0 = time.perf_counter()
    console.print(f"[bold]1/4[/bold] rendering the synthetic world ({s.ids} vehicles, {s.cameras} cameras, "
                  f"preset {s.preset}) into {out / 'data'}")
    render_demo_data(out / "data", s)
    t_data = time.perf_counter() - t0
    dataset = load_data(cfg)
    backbone = cfg.model.backbone
    runs = [("bot", cfg)]
    if backbone.pretrained is not None:  # the same split from random weights: what the ImageNet start is worth
        scratch = load_experiment(s.config, [f"data.root={out / 'data'}", f"output_dir={out / 'bot-scratch'}",
                                             f"seed={s.seed}", *(overrides or []), "model.backbone.pretrained=null"])
        runs.append(("bot-scratch", scratch))
    rows, t1 = {}, time.perf_counter()
    for i, (folder, run_cfg) in enumerate(runs):
        start = run_cfg.model.backbone.pretrained or "scratch"
        label = f"bot, {start} start" if len(runs) > 1 else "bot"
        console.print(f"[bold]2/4[/bold] training {label} ({backbone.name}, {run_cfg.schedule.epochs} epochs, "
                      f"{len(dataset.train)} training images){' - same split' if i else ''}")
        rows[label] = run_training(run_cfg, dataset=dataset, overwrite=True)  # the demo's runs are replaced
    t_train = time.perf_counter() - t1
    results = next(iter(rows.values()))
    console.print("[bold]3/4[/bold] evaluating against a random ranking on the same split")
    random_results = random_ranking_results(dataset, cfg, s.seed)
    rows["random ranking"] = random_results
    console.print(results_table(rows, title=f"demo: synthetic veri776 layout, {len(dataset.query)} queries, "
                                            f"{len(dataset.gallery)} gallery"))
    if len(runs) > 1:
        (first, a), (second, b) = list(rows.items())[:2]
        console.print(f"{first} vs {second}: {100 * (a['mAP'] - b['mAP']):+.1f} mAP, "
                      f"{100 * (a['rank1'] - b['rank1']):+.1f} Rank-1 (one seed each; the seed-to-seed spread "
                      f"is in docs/results.md)", soft_wrap=True)
    console.print("[bold]4/4[/bold] writing report.html")
    method = load_bundle(out / "bot")
    qf = extract_features(method, dataset.query, cfg.data).numpy()
    gf = extract_features(method, dataset.gallery, cfg.data).numpy()
    rng = np.random.default_rng(s.seed)
    picks = sorted(rng.choice(len(dataset.query), size=min(6, len(dataset.query)), replace=False).tolist())
    ranked = ranked_gallery(qf, gf, dataset.query, dataset.gallery, picks, k=10)
    curves = {name: r["cmc"] for name, r in rows.items() if r.get("cmc") is not None}
    elapsed = time.perf_counter() - t0
    notes = [f"data: {out / 'data'} (synthetic, preset {s.preset}, seed {s.seed})",
             f"method: bot with {backbone.name} ({', '.join(folder for folder, _ in runs)}), "
             f"{cfg.schedule.epochs} epochs, {cfg.data.height}x{cfg.data.width}",
             f"protocol: {results.get('protocol', dataset.protocol)}, junk rule: {results.get('junk_rule_text', '')}",
             f"time: data {t_data:.0f} s, training+eval {t_train:.0f} s, total {elapsed:.0f} s"]
    report = write_report(out / "report.html", "vreid demo", rows, curves, ranked, dataset.query, dataset.gallery,
                          notes)
    summary = {"bot": results, "random": random_results, "seconds": elapsed, "report": str(report)}
    if len(runs) > 1:
        summary["bot_scratch"] = rows[list(rows)[1]]
    write_json_atomic(out / "demo_results.json", summary)
    console.print(f"report: {report}  ({elapsed:.0f} s in all)")
    console.print(f"serve this gallery: {serve_command(out, cfg.data.layout)}", highlight=False, markup=False,
                  soft_wrap=True)
    return summary


def serve_command(out: Path, layout: str) -> str:
    """The commands that index the demo's test gallery with its trained model and serve it with the web page."""
    import shlex

    store, run, data = (shlex.quote(str(p)) for p in (out / "gallery", out / "bot", out / "data"))
    return (f"vreid index build {store} --checkpoint {run} --data {data} --layout {layout} --overwrite "
            f"&& vreid serve {store}")
