"""The hook that refreshes a label source (`vreid.unsup.label_sources`) before every epoch and hands its labels
to the trainer's sampler and to the method; report rows go to clusters.csv."""
from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from torch import nn

from vreid.engine.extract import extract_features
from vreid.engine.hooks import Hook
from vreid.fileio import write_text_atomic
from vreid.unsup.label_sources import LabelContext, LabelSource

if TYPE_CHECKING:
    from vreid.engine.trainer import Trainer


class TrainerLabelContext(LabelContext):
    """A label context whose features come from the running trainer's data settings and device."""

    def extract(self, module: nn.Module, indices: np.ndarray):
        t = self.trainer
        return extract_features(module, [t.dataset.train[i] for i in indices], t.cfg.data, t.device, amp=t.amp)


def write_rows_csv(path, rows: Sequence[dict[str, Any]]) -> None:
    """All report rows so far as one CSV (columns: the keys of the first row), written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


class LabelSourceHook(Hook):
    """Refreshes a source before every epoch and hands its labels on: `labels` to `trainer.set_train_labels`,
    `per_model[b]` to `method.set_pseudo_labels(b, ...)`; report rows go to clusters.csv in the run folder.

    The method says which modules extract features with `label_models() -> (models, online)` (default: itself).
    """

    priority = 10  # labels must be in place before any other hook sees the epoch
    rng_salt = 0x0D5

    def __init__(self, source: LabelSource, method: nn.Module) -> None:
        self.source, self.method = source, method
        self.rows: list[dict[str, Any]] = []

    def context(self, trainer: "Trainer") -> LabelContext:
        models, online = (self.method.label_models() if hasattr(self.method, "label_models")
                          else ([self.method], [self.method]))
        rng = np.random.default_rng([trainer.cfg.seed, trainer.epoch, self.rng_salt])
        return TrainerLabelContext(trainer, self.method, trainer.epoch, trainer.cfg.schedule.epochs,
                                   models, online, rng)

    def before_epoch(self, trainer: "Trainer") -> None:
        result = self.source.refresh(self.context(trainer))
        result.check(len(trainer.dataset.train))
        for b, labels in enumerate(result.per_model):
            self.method.set_pseudo_labels(b, labels, result.features[b], result.subset)
        trainer.set_train_labels(result.labels.tolist())
        self.rows.extend(result.report_rows)
        if self.rows and trainer.dist.is_main:
            write_rows_csv(trainer.output_dir / "clusters.csv", self.rows)

    def state_dict(self) -> dict[str, Any]:
        return {"source": self.source.state_dict(), "rows": list(self.rows)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source.load_state_dict(state["source"])
        self.rows = list(state["rows"])
