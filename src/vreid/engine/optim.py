"""Optimizers by name, built from a method's parameter groups."""
from __future__ import annotations

from typing import Any, Callable

import torch

from vreid.config.schema import OptimConfig
from vreid.registry import Registry

OPTIMIZERS: Registry[Callable[[list[dict[str, Any]], OptimConfig], torch.optim.Optimizer]] = Registry("optimizer")


@OPTIMIZERS.register("adam")
def _adam(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("adamw")
def _adamw(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("sgd")
def _sgd(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
    )


def build_optimizer(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    """Each group keeps its own `lr`; it is remembered as `base_lr` for the schedule."""
    optimizer = OPTIMIZERS.get(cfg.name)(groups, cfg)
    for group in optimizer.param_groups:
        group.setdefault("base_lr", group["lr"])
    return optimizer
