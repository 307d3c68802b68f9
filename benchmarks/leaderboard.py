"""Train each listed method on the same synthetic split with the same budget and seed; write docs/results.md.

Every method is trained from `configs/<method>/synthetic.yaml` (or a YAML path given in --methods) with the
data, image size, batch shape, epochs and seed forced to the same values, then evaluated without and with
k-reciprocal re-ranking. Rows accumulate in docs/results.json; docs/results.md is regenerated from it.

    python benchmarks/leaderboard.py --methods bot --preset hard
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
    return ROOT / "configs" / entry / "synthetic.yaml"


def budget_overrides(args: argparse.Namespace, data_root: Path, out: Path) -> list[str]:
    """The settings every row shares: same split, images, batch shape, epochs, seed."""
    return [f"data.root={data_root}", f"output_dir={out}", f"seed={args.seed}", f"schedule.epochs={args.epochs}",
            f"data.height={args.size}", f"data.width={args.size}", f"data.ids_per_batch={args.p}",
            f"data.images_per_id={args.k}", "train.eval_every_epochs=0", "train.progress=false",
            "eval.metrics=[map,cmc,minp,cgm]"]


#: One row trains at a time on this machine, so rows started together do not slow each other down.
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
    parser.add_argument("--methods", default="bot", help="comma-separated method names or config paths")
    parser.add_argument("--preset", default="hard", choices=["easy", "medium", "hard"])
    parser.add_argument("--ids", type=int, default=160)
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--p", type=int, default=8, help="identities per batch")
    parser.add_argument("--k", type=int, default=4, help="images per identity")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default=str(ROOT / "runs" / "leaderboard"))
    parser.add_argument("--results", default=str(ROOT / "docs" / "results.json"))
    parser.add_argument("--rerank", default="kreciprocal", help="re-ranking for the second set of columns")
    args = parser.parse_args(argv)

    import torch

    from vreid.config import load_experiment
    from vreid.engine.bundle import load_bundle
    from vreid.engine.evaluate import evaluate_method
    from vreid.engine.run import load_data, run_training
    from vreid.synth import SynthConfig, render_dataset
    from vreid.viz.leaderboard import Row, load_rows, save_rows, write_results_md

    runs = Path(args.runs)
    data_root = runs / f"data-{args.preset}-{args.ids}ids-{args.cameras}cams-{args.size}px-seed{args.seed}"
    with locked(Path(args.results), TRAIN_LOCK):  # two runs starting together must not render it twice
        if not (data_root / "vreid_labels.csv").is_file():
            render_dataset(data_root, SynthConfig(ids=args.ids, cameras=args.cameras, seed=args.seed,
                                                  preset=args.preset, size=args.size, layout="veri776", workers=2))
    split = f"synthetic {args.preset}: {args.ids} ids, {args.cameras} cameras, {args.size}px, seed {args.seed}"
    for entry in [m.strip() for m in args.methods.split(",") if m.strip()]:
        config = config_for(entry)
        name = f"{config.parent.name}/{config.stem}"   # "bot" and "configs/bot/synthetic.yaml" are one row
        out = runs / f"{name.replace('/', '-')}-{args.preset}"
        overrides = budget_overrides(args, data_root, out)
        cfg = load_experiment(config, overrides)
        dataset = load_data(cfg)
        with locked(Path(args.results), TRAIN_LOCK):
            t0 = time.perf_counter()
            plain = run_training(cfg, dataset=dataset, overwrite=True)  # a row is trained anew each time
            seconds = time.perf_counter() - t0
            method = load_bundle(out)
            reranked = evaluate_method(method, dataset, cfg, torch.device("cpu"), None, rerank=args.rerank)
        params = sum(p.numel() for p in method.parameters())
        command = ("python benchmarks/leaderboard.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])))
        row = Row(name=name, config=str(config.relative_to(ROOT)) if config.is_relative_to(ROOT) else str(config),
                  split=split, epochs=args.epochs, plain=plain, reranked=reranked, rerank=args.rerank,
                  train_seconds=seconds, params=params, command=command, preset=args.preset)
        with locked(Path(args.results)):  # other leaderboard runs may have added rows meanwhile
            rows = load_rows(Path(args.results))
            rows[(name, args.preset)] = row
            save_rows(Path(args.results), rows)
            write_results_md(Path(args.results).with_suffix(".md"), rows)
        print(f"{name}: mAP {100 * plain['mAP']:.2f} (re-ranked {100 * reranked['mAP']:.2f}), {seconds:.0f} s")


if __name__ == "__main__":
    main()
