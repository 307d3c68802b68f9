"""Leaderboard rows (docs/results.json) and their markdown table (docs/results.md).

A row is one config trained on the shared synthetic split with several training seeds (the world fixed); the
table shows mean ± sample std over the seeds, groups rows by trunk and start (scratch / ImageNet), and says of
each row whether it beats the `bot` row of its group by more than the noise.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from vreid.fileio import write_json_atomic, write_text_atomic

#: (results key, column title, from the re-ranked results) of each averaged column
COLUMNS = (("mAP", "mAP", False), ("rank1", "R-1", False), ("mINP", "mINP", False), ("mCGM", "mCGM", False),
           ("mAP", "mAP +RR", True), ("rank1", "R-1 +RR", True))
#: rows whose name starts with this are the reference of their group
REFERENCE_METHOD = "bot/"
#: a difference counts when it is larger than this many standard errors of the difference
SIGMAS = 2.0


@dataclass
class SeedRun:
    """One training of a row: its seed, its results without and with re-ranking, and its wall-clock time."""

    seed: int
    plain: dict[str, Any]
    reranked: dict[str, Any]
    train_seconds: float


@dataclass
class Row:
    name: str
    config: str
    split: str
    epochs: int
    rerank: str
    params: int
    command: str
    preset: str
    trunk: str                # the backbone(s) the config builds, e.g. "timm:mobilenetv2_100"
    start: str                # "scratch", "imagenet" or "file" (a local weights path)
    runs: list[SeedRun] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.runs = [r if isinstance(r, SeedRun) else SeedRun(**r) for r in self.runs]

    @property
    def group(self) -> tuple[str, str]:
        return self.trunk, self.start

    def values(self, key: str, reranked: bool = False) -> list[float]:
        return [float((r.reranked if reranked else r.plain)[key]) for r in self.runs
                if (r.reranked if reranked else r.plain).get(key) is not None]

    def add_run(self, run: SeedRun) -> None:
        """Keep one run a seed: a seed trained again replaces its earlier run."""
        self.runs = sorted([r for r in self.runs if r.seed != run.seed] + [run], key=lambda r: r.seed)


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for fewer than two values)."""
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def verdict(row: Row, reference: Row | None, key: str = "mAP") -> str:
    """better / worse / within noise: the difference of the means against SIGMAS standard errors of it."""
    if reference is None:
        return "no bot row in this group"
    if row is reference:
        return "reference"
    a, b = row.values(key), reference.values(key)
    if len(a) < 2 or len(b) < 2:
        return "needs 2+ seeds"
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    diff = ma - mb
    se = math.sqrt(sa ** 2 / len(a) + sb ** 2 / len(b))
    word = "within noise" if abs(diff) <= SIGMAS * se else ("better" if diff > 0 else "worse")
    return f"{word} ({100 * diff:+.1f} ± {100 * SIGMAS * se:.1f})"


def trunk_and_start(model_cfg: Any) -> tuple[str, str]:
    """The Re-ID backbone names a model config builds ("+"-joined) and where their weights start from; backbones
    under a config field with metadata {"reid_trunk": False} (e.g. vapc's viewpoint predictor) are left out."""
    from vreid.models.backbones.config import BackboneConfig

    found: list[BackboneConfig] = []
    todo = [model_cfg]
    while todo:
        obj = todo.pop(0)
        if isinstance(obj, BackboneConfig):
            found.append(obj)
        elif isinstance(obj, (list, tuple)):
            todo.extend(obj)
        elif dataclasses.is_dataclass(obj):   # a field marked {"reid_trunk": False} (a helper model) is not one
            todo.extend(getattr(obj, f.name) for f in dataclasses.fields(obj) if f.metadata.get("reid_trunk", True))
    if not found:
        return "own trunk", "scratch"
    starts = {"scratch" if b.pretrained is None else ("imagenet" if b.pretrained == "imagenet" else "file")
              for b in found}
    return "+".join(dict.fromkeys(b.name for b in found)), "/".join(sorted(starts))


def load_rows(path: Path) -> dict[tuple[str, str], Row]:
    if not path.is_file():
        return {}
    rows = [Row(**r) for r in json.loads(path.read_text())]
    return {(r.name, r.preset): r for r in rows}


def save_rows(path: Path, rows: dict[tuple[str, str], Row]) -> None:
    write_json_atomic(path, [dataclasses.asdict(r) for r in rows.values()])


def _cell(values: Sequence[float]) -> str:
    if not values:
        return "-"
    m, s = mean_std(values)
    return f"{100 * m:.1f}" if s is None else f"{100 * m:.1f} ± {100 * s:.1f}"


def grouped(rows: Iterable[Row]) -> dict[tuple[str, str], list[Row]]:
    """Rows by (trunk, start), in first-seen order; the reference row first within its group."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault(r.group, []).append(r)
    for members in groups.values():
        members.sort(key=lambda r: not r.name.startswith(REFERENCE_METHOD))
    return groups


def rerankers_section(path: Path) -> list[str]:
    """Markdown lines for the re-rankers compared on one run's features (`<results>_rerankers.json`: a title,
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


ABOUT = [
    "# Results on the synthetic world",
    "",
    "Every row: trained by `benchmarks/leaderboard.py` on the same synthetic split (the world fixed) with the same",
    "image size, batch shape (P x K) and epochs, once per training seed; evaluated under the VeRi-776 protocol",
    "(same-id same-camera gallery images removed). Metrics in %, mean ± sample standard deviation over the seeds.",
    "`+RR` = the same model re-ranked (k-reciprocal, k1=20, k2=6, lambda=0.3). mCGM = HRCN's cross-camera",
    "generalisation measure. Rows are grouped by trunk and start (scratch / ImageNet): compare rows within a group.",
    f"`vs bot` compares a row's mAP with its group's `bot` row: the difference of the means ± {SIGMAS:g} standard",
    "errors of that difference; `better` / `worse` when the difference is larger than that, else `within noise`.",
    "Times are wall-clock per training run on the 2-core CPU machine, often shared with other jobs.",
]
#: the current table (docs/results.md)
INTRO = [
    *ABOUT,
    "",
    "The budget of the table (v2): the `crossview` world (160 ids, 8 cameras, 64 px, world seed 0; 1067 training",
    "images of 80 ids, 275 queries, 943 gallery), P8 x K4, 6 epochs, training seeds 0, 1, 2; the command of each row",
    "is under Commands. The round-1 table (`hard` preset, 10 epochs, one seed) stays in",
    "[results-round1.md](results-round1.md), with the re-rankers compared on its `bot` features.",
    "",
    "Cost: the time column is each run's wall-clock with 2 to 5 runs sharing the 2 cores. Summed over the 33",
    "rows x 3 seeds it is 8.7 h; 37 of those runs, made 3.6 at a time on average (4.1 h of run time in 68 min),",
    "put the whole table at about 2.4 h of this machine. `make leaderboard` (`--methods all --seeds 3",
    "--skip-done`) trains one run at a time and resumes where it stopped. The budget (6 epochs, 64 px, 80",
    "training ids) keeps one seed of the heaviest rows (saver with its VAE stage, musp, hpgn) under 3 min of",
    "machine time while the ImageNet start still stands far from scratch (bot: 24.8 against 6.0 mAP).",
    "Every run here trained with `OMP_NUM_THREADS=1` (several runs at once, each with its own `TMPDIR`, which holds",
    "the one-run-at-a-time lock); a run is deterministic for a given thread count, and another count sums in",
    "another order, so the same seed can land a point or two away (`benchmarks/probes/bot-raw-triplet.yaml`,",
    "seed 0: 14.2 mAP with one thread, 15.8 with two): the commands below say so.",
]


#: the round-1 table (docs/results-round1.md): the first rows, kept as they were measured
ROUND1_INTRO = [*ABOUT,
                "",
                "Round 1: the `hard` world (160 ids, 8 cameras, 64 px, world seed 0), P8 x K4, 10 epochs, one training",
                "seed (0), every trunk from random weights; kept so these numbers stay reproducible with the configs",
                "as they were then (`git show 1e29ddd:configs/<method>/<name>.yaml`; round 1's `bot/synthetic` is",
                "today's `bot/synthetic-scratch`, the clip_senet and usl rows used the tiny IBN-a ResNet). The current",
                "table (`crossview` world, 3 seeds, ImageNet starts) is [results.md](results.md).",
                ]
#: `benchmarks/leaderboard.py --intro NAME`
INTROS = {"v2": INTRO, "round1": ROUND1_INTRO}


def write_results_md(path: Path, rows: dict[tuple[str, str], Row], intro: Sequence[str] = INTRO) -> None:
    header = ("| method | seeds | " + " | ".join(title for _, title, _ in COLUMNS)
              + " | vs bot (mAP) | time / run | params | config |")
    lines = list(intro)
    for (trunk, start), members in grouped(rows.values()).items():
        reference = next((r for r in members if r.name.startswith(REFERENCE_METHOD)), None)
        budgets = "; ".join(dict.fromkeys(f"{r.split}, {r.epochs} epochs" for r in members))
        lines += ["", f"## {trunk}, {start}", "", f"Split: {budgets}.", "",
                  header, "| " + " | ".join(["---"] * (len(COLUMNS) + 6)) + " |"]
        for r in members:
            cells = [_cell(r.values(key, rr)) for key, _, rr in COLUMNS]
            minutes = sum(run.train_seconds for run in r.runs) / max(len(r.runs), 1) / 60
            lines.append(f"| {r.name} | {len(r.runs)} | " + " | ".join(cells)
                         + f" | {verdict(r, reference)} | {minutes:.1f} min | {r.params / 1e6:.2f} M | `{r.config}` |")
    lines += rerankers_section(path.with_name(f"{path.stem}_rerankers.json"))
    lines += ["", "## Commands", ""]
    for r in rows.values():
        seeds = ", ".join(str(run.seed) for run in r.runs)
        lines.append(f"- {r.name} (seeds {seeds}): `{r.command}` (re-ranking: {r.rerank})")
    write_text_atomic(path, "\n".join(lines) + "\n")
