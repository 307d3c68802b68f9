"""Training logs: a CSV of metrics per step (append-only) and TensorBoard scalars when available."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


class MetricsLog:
    """Append rows of named scalars to `metrics.csv` (header from the first row) and to TensorBoard."""

    def __init__(self, output_dir: str | Path, tensorboard: bool = True, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = Path(output_dir) / "metrics.csv"
        self._fields: list[str] | None = None
        self._writer = None
        if enabled and self.path.exists():
            with open(self.path, newline="") as f:
                header = next(csv.reader(f), None)
            self._fields = header
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(Path(output_dir) / "tensorboard"))
            except Exception:  # tensorboard is optional at run time; the CSV always works
                self._writer = None

    def log(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: float(v) for k, v in values.items()}}
        if self._fields is None:
            self._fields = list(row)
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(self._fields)
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([row.get(k, "") for k in self._fields])
        if self._writer is not None:
            for k, v in row.items():
                if k != "step":
                    self._writer.add_scalar(k, v, step)

    def truncate_after(self, step: int) -> None:
        """On resume: drop rows logged after the checkpoint, so the CSV reads as one uninterrupted run."""
        if not self.enabled or not self.path.exists():
            return
        with open(self.path, newline="") as f:
            rows = list(csv.reader(f))
        kept = rows[:1] + [r for r in rows[1:] if r and int(float(r[0])) <= step]
        from vreid.fileio import write_text_atomic
        import io

        buf = io.StringIO()
        csv.writer(buf).writerows(kept)
        write_text_atomic(self.path, buf.getvalue())

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
