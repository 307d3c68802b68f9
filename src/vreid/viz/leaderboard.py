"""Leaderboard rows (docs/results.json) and their markdown table (docs/results.md)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vreid.fileio import write_json_atomic, write_text_atomic


@dataclass
class Row:
    name: str
    config: str
    split: str
    epochs: int
    plain: dict[str, Any]
    reranked: dict[str, Any]
    rerank: str
    train_seconds: float
    params: int
    command: str
    preset: str = "hard"


def load_rows(path: Path) -> dict[tuple[str, str], Row]:
    if not path.is_file():
        return {}
    rows = [Row(**r) for r in json.loads(path.read_text())]
    return {(r.name, r.preset): r for r in rows}


def save_rows(path: Path, rows: dict[tuple[str, str], Row]) -> None:
    write_json_atomic(path, [dataclasses.asdict(r) for r in rows.values()])


def _pct(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    return f"{100 * v:.1f}" if v is not None else "-"


def rerankers_section(path: Path) -> list[str]:
    """Markdown lines for the re-rankers compared on one run's features (`docs/results_rerankers.json`: a title,
    the features, how they were made, and rows of re-ranker, runs, mAP and R-1 means and stds in %); [] without it."""
    if not path.is_file():
        return []
    data = json.loads(path.read_text())

    def cell(mean: float, std: float | None) -> str:
        return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"

    lines = ["", f"## {data['title']}", "", data["about"], "",
             "| re-ranker | runs | mAP | R-1 |", "| --- | --- | --- | --- |"]
    for r in data["rows"]:
        lines.append(f"| {r['rerank']} | {r['runs']} | {cell(r['mAP'], r.get('mAP_std'))} | "
                     f"{cell(r['rank1'], r.get('rank1_std'))} |")
    return lines


def write_results_md(path: Path, rows: dict[tuple[str, str], Row]) -> None:
    lines = [
        "# Results on the synthetic world",
        "",
        "Every row: trained by `benchmarks/leaderboard.py` on the same synthetic split, with the same image size,",
        "batch shape (P x K), epochs and seed; evaluated under the VeRi-776 protocol (same-id same-camera gallery",
        "images removed). Metrics in %. `+RR` = the same model re-ranked (k-reciprocal, k1=20, k2=6, lambda=0.3).",
        "mCGM = HRCN's cross-camera generalisation measure (`eval.metrics: [..., cgm]`; `-` for a row trained",
        "before the leaderboard measured it).",
        "Times are wall-clock on the 2-core CPU machine, often shared with other jobs: compare them only roughly.",
        "The trunk is each config's own choice (the params column shows its size): the CPU-sized configs of some",
        "methods use much smaller trunks than `bot`, so compare rows within a method first.",
        "",
        "| method | split | epochs | mAP | R-1 | R-5 | mINP | mCGM | mAP +RR | R-1 +RR | train time | params | config |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows.values():
        lines.append(
            f"| {r.name} | {r.split} | {r.epochs} | {_pct(r.plain, 'mAP')} | {_pct(r.plain, 'rank1')} | "
            f"{_pct(r.plain, 'rank5')} | {_pct(r.plain, 'mINP')} | {_pct(r.plain, 'mCGM')} | {_pct(r.reranked, 'mAP')} | "
            f"{_pct(r.reranked, 'rank1')} | {r.train_seconds / 60:.1f} min | {r.params / 1e6:.2f} M | `{r.config}` |"
        )
    lines += rerankers_section(path.parent / "results_rerankers.json")
    lines += ["", "## Commands", ""]
    for r in rows.values():
        lines.append(f"- {r.name}: `{r.command}` (re-ranking: {r.rerank})")
    write_text_atomic(path, "\n".join(lines) + "\n")
