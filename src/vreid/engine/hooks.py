"""Hooks: how methods act around steps and epochs without the trainer knowing them."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vreid.engine.trainer import Trainer


class Hook:
    """Override what you need. State returned by state_dict() is saved in checkpoints and restored on resume.

    Order of calls: before_train, then per epoch before_epoch, (before_step, after_backward, after_step)*,
    after_epoch; after_train at the end. Hooks run in ascending `priority`.
    """

    priority: int = 50

    def before_train(self, trainer: "Trainer") -> None: ...

    def before_epoch(self, trainer: "Trainer") -> None: ...

    def before_step(self, trainer: "Trainer", batch: dict) -> None: ...

    def after_backward(self, trainer: "Trainer") -> None:
        """After loss.backward() (gradients unscaled), before optimizer.step()."""

    def after_step(self, trainer: "Trainer", batch: dict, outputs: dict, losses: dict) -> None:
        """After optimizer.step(): momentum encoders, queues."""

    def after_epoch(self, trainer: "Trainer") -> None: ...

    def after_train(self, trainer: "Trainer") -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
