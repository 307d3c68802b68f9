"""Training logs: a CSV of metrics per step and TensorBoard scalars when available.

Nothing is written until the first row (TensorBoard's event file included), so a run that fails before its
first step leaves no log.
A row with a column the file lacks (the evaluation metrics after training rows) widens the header.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from vreid.fileio import write_text_atomic


class MetricsLog:
    """Append rows of named scalars to `metrics.csv` and to TensorBoard."""

    def __init__(self, output_dir: str | Path, tensorboard: bool = True, enabled: bool = True) -> None:
        self.enabled = enabled
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / "metrics.csv"
        self.tensorboard = tensorboard
        self._fields: list[str] | None = None
        self._writer: Any = None

    def _read_rows(self) -> list[list[str]]:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            return list(csv.reader(f))

    def _rewrite(self, rows: list[list[str]]) -> None:
        buf = io.StringIO()
        csv.writer(buf).writerows(rows)
        write_text_atomic(self.path, buf.getvalue())

    def _tensorboard(self) -> Any:
        if self._writer is None and self.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(self.output_dir / "tensorboard"))
            except Exception:  # tensorboard is optional at run time; the CSV always works
                self.tensorboard = False
        return self._writer

    def log(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: float(v) for k, v in values.items()}}
        if self._fields is None:
            existing = self._read_rows()
            self._fields = existing[0] if existing else []
        new = [k for k in row if k not in self._fields]
        if new or not self.path.exists():
            rows = self._read_rows()
            self._fields = self._fields + new
            self._rewrite([self._fields] + [r + [""] * (len(self._fields) - len(r)) for r in rows[1:]])
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([row.get(k, "") for k in self._fields])
        writer = self._tensorboard()
        if writer is not None:
            for k, v in row.items():
                if k != "step":
                    writer.add_scalar(k, v, step)

    def truncate_after(self, step: int) -> None:
        """On resume: drop rows logged after the checkpoint, so the CSV reads as one uninterrupted run."""
        if not self.enabled or not self.path.exists():
            return
        rows = self._read_rows()
        self._rewrite(rows[:1] + [r for r in rows[1:] if r and int(float(r[0])) <= step])

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
