"""Freeze parts of a model for the first epochs (e.g. a pretrained trunk while new heads warm up)."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from vreid.engine.hooks import Hook


def set_trainable(module: nn.Module, trainable: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(trainable)


class FreezeModules(Hook):
    """Before each epoch: modules named in `names` (attribute paths of the method, e.g. "backbone.layer1")
    are frozen while epoch < `epochs`, trainable afterwards. BatchNorm statistics stay frozen with them.

    Frozen parameters keep requires_grad=False, so they get no gradient and the optimizer leaves them alone.
    """

    priority = 10

    def __init__(self, method: nn.Module, names: Sequence[str], epochs: int) -> None:
        self.modules = [method.get_submodule(n) for n in names]
        self.epochs = epochs

    def _apply(self, frozen: bool) -> None:
        for m in self.modules:
            set_trainable(m, not frozen)

    def before_epoch(self, trainer) -> None:
        self._apply(trainer.epoch < self.epochs)

    def before_step(self, trainer, batch) -> None:
        if trainer.epoch < self.epochs:
            for m in self.modules:
                m.eval()  # keep BN running statistics of the frozen part fixed
