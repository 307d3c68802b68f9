"""Learning-rate schedules as pure functions of training progress (so resume needs no scheduler state)."""
from __future__ import annotations

import bisect
import math
from typing import Callable

from vreid.config.schema import ScheduleConfig
from vreid.registry import Registry

#: name -> function(cfg) returning factor(progress_in_epochs) -> multiplier of each group's base lr. Each entry's
#: `uses` meta lists the optional keys (of OPTIONAL_KEYS) it reads; setting one it ignores is a config error.
SCHEDULES: Registry[Callable[[ScheduleConfig], Callable[[float], float]]] = Registry("schedule")

#: Keys only some schedules read, with their "off" values.
OPTIONAL_KEYS = {"delay_epochs": 0, "hold_epochs": 0, "min_lr_factor": 0.0}


def ignored_keys(cfg: ScheduleConfig) -> list[str]:
    """The optional keys `cfg` sets that its schedule does not read (they would silently do nothing)."""
    uses = SCHEDULES.meta(cfg.name).get("uses", ())
    return [k for k, off in OPTIONAL_KEYS.items() if getattr(cfg, k) != off and k not in uses]


def _warmup(cfg: ScheduleConfig, progress: float) -> float | None:
    """Linear warmup from warmup_factor to 1 over warmup_epochs; None once warmup is over."""
    if progress < cfg.warmup_epochs:
        alpha = progress / cfg.warmup_epochs
        return cfg.warmup_factor * (1 - alpha) + alpha
    return None


@SCHEDULES.register("warmup_multistep", uses=("hold_epochs",))
def warmup_multistep(cfg: ScheduleConfig) -> Callable[[float], float]:
    """Warmup, then x gamma at each milestone; with `hold_epochs`, the base lr first and all of it shifted by them."""
    milestones = sorted(cfg.milestones)

    def factor(progress: float) -> float:
        if progress < cfg.hold_epochs:
            return 1.0
        progress -= cfg.hold_epochs
        decay = cfg.gamma ** bisect.bisect_right(milestones, math.floor(progress))
        warm = _warmup(cfg, progress)
        return decay * (warm if warm is not None else 1.0)

    return factor


@SCHEDULES.register("warmup_cosine", uses=("delay_epochs", "min_lr_factor"))
def warmup_cosine(cfg: ScheduleConfig) -> Callable[[float], float]:
    """Warmup, then flat until `delay_epochs`, then cosine down to `min_lr_factor` at the last epoch."""

    def factor(progress: float) -> float:
        warm = _warmup(cfg, progress)
        if warm is not None:
            return warm
        start = max(cfg.warmup_epochs, cfg.delay_epochs)
        if progress < start:
            return 1.0
        span = max(cfg.epochs - start, 1e-8)
        t = min((progress - start) / span, 1.0)
        return cfg.min_lr_factor + (1 - cfg.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


@SCHEDULES.register("constant")
def constant(cfg: ScheduleConfig) -> Callable[[float], float]:
    def factor(progress: float) -> float:
        warm = _warmup(cfg, progress)
        return 1.0 if warm is None else warm

    return factor


def build_schedule(cfg: ScheduleConfig) -> Callable[[float], float]:
    return SCHEDULES.get(cfg.name)(cfg)
