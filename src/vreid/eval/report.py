"""Results as a text or rich table, and as JSON on disk."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vreid.eval.metrics import EvalResult
from vreid.fileio import write_json_atomic

COLUMNS = (("mAP", "mAP"), ("rank1", "Rank-1"), ("rank5", "Rank-5"), ("rank10", "Rank-10"), ("mINP", "mINP"),
           ("mCGM", "mCGM"))


def _cells(d: dict[str, Any]) -> list[str]:
    return [f"{100 * d[key]:.2f}" if d.get(key) is not None else "-" for key, _ in COLUMNS]


def describe(result: EvalResult | dict[str, Any]) -> str:
    """One line saying how the numbers were made: protocol, gallery rule, metric, re-ranking, query counts."""
    d = result.to_dict() if isinstance(result, EvalResult) else result
    text = (f"protocol {d.get('protocol')}: {d.get('junk_rule_text', d.get('junk_rule'))}; "
            f"metric {d.get('metric')}; re-ranking {d.get('rerank')}; "
            f"{d.get('num_valid_queries')} of {d.get('num_queries')} queries have a match")
    if d.get("draws"):
        text += f"; mean of {len(d['draws'])} gallery draws (seeds {d.get('seeds')})"
    return text


def format_table(result: EvalResult | dict[str, Any], title: str = "", rich: bool = False) -> Any:
    """Metrics in percent as plain text (default) or a rich.table.Table (`rich=True`), with the protocol line."""
    d = result.to_dict() if isinstance(result, EvalResult) else result
    header = [label for _, label in COLUMNS]
    if rich:
        from rich.table import Table

        table = Table(title=title or None, caption=describe(d))
        for label in header:
            table.add_column(label, justify="right")
        table.add_row(*_cells(d))
        return table
    cells = _cells(d)
    widths = [max(len(h), len(c)) for h, c in zip(header, cells)]
    lines = [title] if title else []
    lines.append("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    lines.append("  ".join(c.rjust(w) for c, w in zip(cells, widths)))
    lines.append(describe(d))
    return "\n".join(lines)


def save_result(path: str | Path, result: EvalResult | dict[str, Any]) -> None:
    """Write the result's dict as JSON (atomically)."""
    write_json_atomic(path, result.to_dict() if isinstance(result, EvalResult) else result)
