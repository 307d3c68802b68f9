"""Train each listed method on the same synthetic split with the same budget and seeds; write docs/results.md.

Every method is trained from `configs/<method>/synthetic.yaml` (or a YAML path given in --methods) with the
data, image size, batch shape and epochs forced to the same values, once per training seed (0 .. --seeds - 1;
the world is fixed by --world-seed), then evaluated without and with k-reciprocal re-ranking. Rows accumulate in
docs/results.json (one entry per seed); docs/results.md is regenerated from it with mean ± std over the seeds.

    python benchmarks/leaderboard.py --methods bot --seeds 3
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

# Rows are timed: under oversubscription, spinning OpenMP threads slow every process far more than linearly.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]


def config_for(entry: str) -> Path:
    path = Path(entry)
    if entry.endswith(".yaml"):
        return path if path.is_absolute() else ROOT / path
    if "/" in entry:   # "bot/synthetic-scratch": a config of the method's folder
        return ROOT / "configs" / f"{entry}.yaml"
    return ROOT / "configs" / entry / "synthetic.yaml"


def budget_overrides(args: argparse.Namespace, data_root: Path, out: Path, seed: int) -> list[str]:
    """The settings every row shares: same split, images, batch shape, epochs; `seed` is the training seed."""
    return [f"data.root={data_root}", f"output_dir={out}", f"seed={seed}", f"schedule.epochs={args.epochs}",
            f"data.height={args.size}", f"data.width={args.size}", f"data.ids_per_batch={args.p}",
            f"data.images_per_id={args.k}", "train.eval_every_epochs=0", "train.progress=false",
            "eval.metrics=[map,cmc,minp,cgm]"]


#: `--methods all`: every row of docs/results.md, references first, in the order the table was run
TABLE = ["bot/synthetic", "bot/synthetic-scratch", "bot/synthetic-no-imagenet",
         "usl/synthetic-schedule", "usl/synthetic-fixed-eps", "usl/synthetic-sampling", "usl/synthetic-cotrain",
         "usl/synthetic-cotrain-intersection", "vapc/synthetic", "vapc/synthetic-da",
         "mbr/synthetic", "mbr/synthetic-4g", "mbr/synthetic-hybrid4b",
         "moreid/synthetic-sbs-triplet", "moreid/synthetic-moreid", "moreid/synthetic-sbs-he",
         "moreid/synthetic-sbs-triplet-dict", "hrcn/synthetic", "hrcn/synthetic-no-cross", "hrcn/synthetic-no-regional",
         "saver/synthetic-no-residual", "saver/synthetic", "saver/synthetic-ever", "hpgn/synthetic",
         "hpgn/synthetic-no-pyramid", "musp/synthetic", "musp/synthetic-no-reg",
         "clip_senet/synthetic-full", "clip_senet/synthetic-baseline", "clip_senet/synthetic-sem",
         "clip_senet/synthetic-sem-afem", "clip_senet/synthetic-g8", "clip_senet/synthetic-g64"]

#: One row trains at a time on this machine, so rows started together do not slow each other down.
DEFAULT_PRESET = "crossview"
TRAIN_LOCK = Path(tempfile.gettempdir()) / "vreid-leaderboard-train.lock"


@contextlib.contextmanager
def locked(path: Path, lock_file: Path | None = None):
    """An exclusive lock (beside the results file by default), released on exit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_file = lock_file or path.with_suffix(".lock")
    with open(lock_file, "w") as f:
        if lock_file == TRAIN_LOCK:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"waiting for another leaderboard row to finish ({lock_file})", flush=True)
                fcntl.flock(f, fcntl.LOCK_EX)
        else:
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="bot",
                        help="comma-separated method names, method/config names or config paths; all: the whole table")
    parser.add_argument("--preset", default=DEFAULT_PRESET, help="synthetic world preset (vreid.synth.PRESETS)")
    parser.add_argument("--ids", type=int, default=160)
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=6, help="the v2 budget (docs/results.md)")
    parser.add_argument("--p", type=int, default=8, help="identities per batch")
    parser.add_argument("--k", type=int, default=4, help="images per identity")
    parser.add_argument("--world-seed", type=int, default=0, help="the synthetic world's seed (fixed for all rows)")
    parser.add_argument("--seeds", type=int, default=1, help="training seeds per row: 0 .. SEEDS - 1 (the table: 3)")
    parser.add_argument("--skip-done", action="store_true",
                        help="keep the seeds a row already has in the results file (resume a stopped table)")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "leaderboard"))
    parser.add_argument("--results", default=str(ROOT / "docs" / "results.json"))
    parser.add_argument("--rerank", default="kreciprocal", help="re-ranking for the second set of columns")
    parser.add_argument("--render-only", action="store_true", help="rewrite the .md beside --results; train nothing")
    parser.add_argument("--intro", default="v2", help="the table's introduction (vreid.viz.leaderboard.INTROS)")
    args = parser.parse_args(argv)
    from vreid.viz.leaderboard import INTROS

    if args.intro not in INTROS:
        parser.error(f"--intro {args.intro!r}: choose one of {', '.join(INTROS)}")
    intro = INTROS[args.intro]
    if args.render_only:
        from vreid.viz.leaderboard import load_rows, write_results_md

        results = Path(args.results)
        write_results_md(results.with_suffix(".md"), load_rows(results), intro)
        return

    import torch

    from vreid.config import load_experiment
    from vreid.engine.bundle import load_bundle
    from vreid.engine.evaluate import evaluate_method
    from vreid.engine.run import load_data, run_training
    from vreid.synth import SynthConfig, render_dataset
    from vreid.viz.leaderboard import Row, SeedRun, load_rows, save_rows, trunk_and_start, write_results_md

    from vreid.synth.catalog import get_preset

    get_preset(args.preset)  # an unknown preset fails here, before any rendering
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    runs = Path(args.runs)
    results = Path(args.results)
    world = f"{args.preset}-{args.ids}ids-{args.cameras}cams-{args.size}px-seed{args.world_seed}"
    data_root = runs / f"data-{world}"
    entries = TABLE if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    for entry in entries:   # every config loads before the first row trains: a typo costs seconds, not hours
        if not config_for(entry).is_file():
            parser.error(f"--methods {entry!r}: no config at {config_for(entry)}; give a method name (bot), a "
                         "method/config name (bot/synthetic-scratch) or a YAML path")
        load_experiment(config_for(entry), budget_overrides(args, data_root, runs / "check", 0))
    with locked(results, TRAIN_LOCK):  # two runs starting together must not render it twice
        if not (data_root / "vreid_labels.csv").is_file():
            render_dataset(data_root, SynthConfig(ids=args.ids, cameras=args.cameras, seed=args.world_seed,
                                                  preset=args.preset, size=args.size, layout="veri776", workers=2))
    split = (f"synthetic {args.preset}: {args.ids} ids, {args.cameras} cameras, {args.size}px, world seed "
             f"{args.world_seed}, P{args.p} x K{args.k}")
    threads = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    command = threads + "python benchmarks/leaderboard.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    for entry in entries:
        config = config_for(entry)
        name = f"{config.parent.name}/{config.stem}"   # "bot" and "configs/bot/synthetic.yaml" are one row
        for seed in range(args.seeds):
            with locked(results):
                done = load_rows(results).get((name, args.preset))
            if (args.skip_done and done is not None and done.split == split and done.epochs == args.epochs
                    and any(r.seed == seed for r in done.runs)):
                print(f"{name} seed {seed}: kept from {results}", flush=True)
                continue
            out = runs / f"{name.replace('/', '-')}-{args.preset}-seed{seed}"
            cfg = load_experiment(config, budget_overrides(args, data_root, out, seed))
            dataset = load_data(cfg)
            with locked(results, TRAIN_LOCK):
                t0 = time.perf_counter()
                plain = run_training(cfg, dataset=dataset, overwrite=True)  # a run is trained anew each time
                seconds = time.perf_counter() - t0
                method = load_bundle(out)
                reranked = evaluate_method(method, dataset, cfg, torch.device("cpu"), None, rerank=args.rerank)
            trunk, start = trunk_and_start(cfg.model)
            params = sum(p.numel() for p in method.parameters())
            with locked(results):  # other leaderboard runs may have added rows meanwhile
                rows = load_rows(results)
                row = rows.get((name, args.preset))
                if row is None or row.split != split or row.epochs != args.epochs:
                    row = Row(name=name, config=str(config.relative_to(ROOT)) if config.is_relative_to(ROOT)
                              else str(config), split=split, epochs=args.epochs, rerank=args.rerank, params=params,
                              command=command, preset=args.preset, trunk=trunk, start=start)
                row.add_run(SeedRun(seed=seed, plain=plain, reranked=reranked, train_seconds=seconds))
                row.command, row.trunk, row.start, row.params = command, trunk, start, params
                rows[(name, args.preset)] = row
                save_rows(results, rows)
                write_results_md(results.with_suffix(".md"), rows, intro)
            print(f"{name} seed {seed}: mAP {100 * plain['mAP']:.2f} (re-ranked {100 * reranked['mAP']:.2f}), "
                  f"{seconds:.0f} s", flush=True)

if __name__ == "__main__":
    main()
