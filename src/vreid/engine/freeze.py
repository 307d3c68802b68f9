"""Freeze parts of a model for the first epochs or steps (e.g. a pretrained trunk while new heads warm up)."""
from __future__ import annotations

from typing import Literal, Sequence

from torch import nn

from vreid.engine.hooks import Hook


def set_trainable(module: nn.Module, trainable: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(trainable)


class FreezeModules(Hook):
    """Modules named in `names` (attribute paths of the method, e.g. "backbone.layer1") are frozen for the
    first `epochs` epochs or the first `steps` optimizer steps (give one), trainable afterwards.

    Frozen parameters keep requires_grad=False, so they get no gradient and the optimizer leaves them alone.
    With `freeze_bn_stats` (the default, as FastReID's layer freeze does) the frozen modules also run in eval
    mode, so their BatchNorm running statistics stay fixed; without it they keep updating (the official MBR
    code's trunk freeze, which only sets requires_grad).
    """

    priority = 10

    def __init__(self, method: nn.Module, names: Sequence[str], epochs: int | None = None,
                 steps: int | None = None, freeze_bn_stats: bool = True) -> None:
        if (epochs is None) == (steps is None):
            raise ValueError("FreezeModules needs exactly one of epochs and steps")
        self.modules = [method.get_submodule(n) for n in names]
        self.unit: Literal["epochs", "steps"] = "epochs" if steps is None else "steps"
        self.length = int(epochs if steps is None else steps)
        self.freeze_bn_stats = freeze_bn_stats
        self._frozen: bool | None = None  # what the modules were last set to (None: not yet)

    @property
    def epochs(self) -> int | None:
        return self.length if self.unit == "epochs" else None

    @property
    def steps(self) -> int | None:
        return self.length if self.unit == "steps" else None

    def _frozen_at(self, trainer) -> bool:
        progress = trainer.epoch if self.unit == "epochs" else trainer.step
        return progress < self.length

    def _set_frozen(self, frozen: bool) -> None:
        for m in self.modules:
            set_trainable(m, not frozen)
        self._frozen = frozen

    def before_epoch(self, trainer) -> None:
        self._set_frozen(self._frozen_at(trainer))

    def before_step(self, trainer, batch) -> None:
        frozen = self._frozen_at(trainer)
        if frozen != self._frozen:  # step-valued freezes end mid-epoch; a run resumed mid-epoch has no before_epoch
            self._set_frozen(frozen)
        if frozen and self.freeze_bn_stats:
            for m in self.modules:
                m.eval()  # keep BN running statistics of the frozen part fixed
