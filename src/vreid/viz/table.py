"""Results as a rich table in the terminal."""
from __future__ import annotations

from typing import Any, Mapping

from rich.console import Console
from rich.table import Table

METRIC_COLUMNS = (("mAP", "mAP"), ("rank1", "Rank-1"), ("rank5", "Rank-5"), ("rank10", "Rank-10"), ("mINP", "mINP"))


def results_table(rows: Mapping[str, Mapping[str, Any]], title: str = "") -> Table:
    """One row per named result dict; metrics shown in percent."""
    table = Table(title=title)
    table.add_column("")
    for _, label in METRIC_COLUMNS:
        table.add_column(label, justify="right")
    for name, res in rows.items():
        table.add_row(name, *[f"{100 * res[k]:.2f}" if res.get(k) is not None else "-" for k, _ in METRIC_COLUMNS])
    return table


def print_results(results: Mapping[str, Any], title: str = "", console: Console | None = None) -> None:
    (console or Console()).print(results_table({"result": results}, title=title))
