"""The per-step hook of the `usl` method: it moves the EMA teachers (and the cluster memories, with memory
momentum > 0) after every step and carries the method's pseudo-labels and centroids across a resume. The labels
themselves come from a label source (`vreid.unsup.label_sources`, `model.labels`) through `LabelSourceHook`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vreid.engine.hooks import Hook
from vreid.engine.momentum import ema_update_
from vreid.unsup.label_sources import joint_labels  # noqa: F401  (its home before the label sources; tests use it)

if TYPE_CHECKING:
    from vreid.methods.usl import UnsupervisedReid


class UslTeacherHook(Hook):
    priority = 10  # right after the labels (LabelSourceHook, same priority, comes first)

    def __init__(self, method: "UnsupervisedReid") -> None:
        self.method = method

    def before_train(self, trainer) -> None:
        for mem in self.method.memories:
            mem.to(trainer.device)

    def after_step(self, trainer, batch, outputs, losses) -> None:
        m = self.method
        for b, (teacher, online) in enumerate(zip(m.teachers, m.encoders)):
            ema_update_(teacher, online, m.cfg.ema_momentum)
            if m.memories[b].momentum > 0 and f"feat{b}" in outputs:
                m.memories[b].update(outputs[f"feat{b}"], m.assigned[b][batch["indices"].to(m.assigned[b].device)])

    def state_dict(self) -> dict[str, Any]:
        m = self.method
        return {"assigned": [a.cpu() for a in m.assigned], "memories": [mem.state_dict() for mem in m.memories]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        m = self.method
        for b, (a, mem) in enumerate(zip(state["assigned"], state["memories"])):
            m.assigned[b] = a.clone()
            m.memories[b].load_state_dict(mem)
