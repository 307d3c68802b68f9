"""Results as rich tables in the terminal: retrieval metrics, and verification ones when computed."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from rich.console import Console
from rich.table import Table

from vreid.eval.verification import FPR_TARGETS, fpr_text, tpr_key

METRIC_COLUMNS = (("mAP", "mAP"), ("rank1", "Rank-1"), ("rank5", "Rank-5"), ("rank10", "Rank-10"), ("mINP", "mINP"))

#: Retrieval columns shown only when some result has them (`cgm` in eval.metrics).
OPTIONAL_COLUMNS = (("mCGM", "mCGM"),)

#: Verification columns (`roc` in eval.metrics); a table of their own, so that each fits an 80-column terminal.
VERIFICATION_COLUMNS = (*((tpr_key(f), f"TPR@FPR={fpr_text(f)}") for f in FPR_TARGETS), ("roc_auc", "ROC AUC"))


def _present(results: Iterable[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    results = list(results)
    return [col for col in columns if any(r.get(col[0]) is not None for r in results)]


def result_columns(results: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(key, label) of METRIC_COLUMNS and of the optional retrieval columns that some result has."""
    return [*METRIC_COLUMNS, *_present(results, OPTIONAL_COLUMNS)]


def verification_columns(results: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(key, label) of the verification columns that some result has (none unless ROC was computed)."""
    return _present(results, VERIFICATION_COLUMNS)


def _table(rows: Mapping[str, Mapping[str, Any]], columns: Sequence[tuple[str, str]], title: str) -> Table:
    table = Table(title=title)
    table.add_column("")
    for _, label in columns:
        table.add_column(label, justify="right")
    for name, res in rows.items():
        table.add_row(name, *[f"{100 * res[k]:.2f}" if res.get(k) is not None else "-" for k, _ in columns])
    return table


def results_table(rows: Mapping[str, Mapping[str, Any]], title: str = "") -> Table:
    """One row per named result dict; retrieval metrics shown in percent."""
    return _table(rows, result_columns(rows.values()), title)


def verification_table(rows: Mapping[str, Mapping[str, Any]], title: str = "") -> Table | None:
    """TPR@FPR and ROC AUC in percent, one row per named result dict; None when no result has them."""
    columns = verification_columns(rows.values())
    return _table(rows, columns, title) if columns else None


def print_results(results: Mapping[str, Any], title: str = "", console: Console | None = None) -> None:
    console = console or Console()
    console.print(results_table({"result": results}, title=title))
    verification = verification_table({"result": results}, title="verification (pairs after junk removal)")
    if verification is not None:
        console.print(verification)
