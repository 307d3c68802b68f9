"""Density (DBSCAN eps) schedules over the pipeline iterations t = 1..E, as a registry of pure functions.

`proposed` is the paper's: a cosine that rises from eps_min to eps_max at t = E/2 (tight clusters first, then
more permissive ones as the features improve), falls back along the same cosine, and is frozen from
t = floor(3E/4) on (at (eps_min + eps_max) / 2 for even splits: 0.55 with 0.4 and 0.7).
The official code also has ablation schedules; the notes name two of them (`scheduling03` = the same cosine over
the full E, `scheduling01` = hold eps_max for the first half); the others here are our own named variants.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from vreid.registry import Registry

#: name -> function(cfg: EpsSchedule, t: int (1-based), total: int) -> eps
EPS_SCHEDULES: Registry[Callable[["EpsSchedule", int, int], float]] = Registry("eps schedule")


@dataclass
class EpsSchedule:
    """Which schedule, and its values. `eps` is used by `fixed`; the others move between eps_min and eps_max."""

    name: str = "proposed"
    eps: float = 0.5
    eps_min: float = 0.4
    eps_max: float = 0.7

    def __call__(self, t: int, total: int) -> float:
        if total < 1 or t < 1:
            raise ValueError(f"eps schedule needs 1 <= t and total >= 1, got t={t}, total={total}")
        return float(EPS_SCHEDULES.get(self.name)(self, t, total))

    def validate(self) -> None:
        if self.name not in EPS_SCHEDULES:
            raise ValueError(f"unknown eps schedule '{self.name}'; available: {', '.join(EPS_SCHEDULES.names())}")
        if not 0 < self.eps_min <= self.eps_max:
            raise ValueError(f"need 0 < eps_min <= eps_max, got {self.eps_min}, {self.eps_max}")


def _cosine(cfg: EpsSchedule, t: float, half: float) -> float:
    """eps_min at t = 0, eps_max at t = half, eps_min again at t = 2 * half."""
    return cfg.eps_min + 0.5 * (cfg.eps_max - cfg.eps_min) * (1 + math.cos(math.pi * (half - t) / half))


@EPS_SCHEDULES.register("proposed")
def proposed(cfg: EpsSchedule, t: int, total: int) -> float:
    """The paper's schedule: cosine up to eps_max at floor(E/2), back down, frozen after floor(3E/4)."""
    half = max(total // 2, 1)
    return _cosine(cfg, min(t, max(3 * total // 4, 1)), half)


@EPS_SCHEDULES.register("fixed")
def fixed(cfg: EpsSchedule, t: int, total: int) -> float:
    return cfg.eps


@EPS_SCHEDULES.register("cosine_full")
def cosine_full(cfg: EpsSchedule, t: int, total: int) -> float:
    """`scheduling03`: the same cosine over the whole run, back to eps_min at t = E (no frozen tail)."""
    return _cosine(cfg, t, max(total / 2, 1))


@EPS_SCHEDULES.register("high_first")
def high_first(cfg: EpsSchedule, t: int, total: int) -> float:
    """`scheduling01`: eps_max for the first half, then the proposed descent and frozen tail."""
    return cfg.eps_max if t <= total // 2 else proposed(cfg, t, total)


@EPS_SCHEDULES.register("rising")
def rising(cfg: EpsSchedule, t: int, total: int) -> float:
    """Half a cosine from eps_min (t = 1) to eps_max (t = E): ever looser clusters."""
    return _cosine(cfg, (t - 1) / max(total - 1, 1) * total / 2, total / 2) if total > 1 else cfg.eps_min


@EPS_SCHEDULES.register("falling")
def falling(cfg: EpsSchedule, t: int, total: int) -> float:
    """Half a cosine from eps_max (t = 1) to eps_min (t = E): ever tighter clusters."""
    return cfg.eps_min + cfg.eps_max - rising(cfg, t, total)
