"""The metric names `eval.metrics` and `vreid eval --metrics` accept, and the evaluation switches they turn on."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from vreid.registry import Registry


@dataclass(frozen=True)
class MetricSpec:
    """How a metric is computed: `switch` is the keyword of `vreid.eval.evaluate` that turns it on (e.g. "roc");
    None for the metrics of the retrieval pass that every evaluation runs (mAP, CMC and mINP share its ranks)."""

    switch: str | None = None


#: name -> MetricSpec
EVAL_METRICS: Registry[MetricSpec] = Registry("metric")

DEFAULT_METRICS = ("map", "cmc", "minp")

EVAL_METRICS.register("map")(MetricSpec())
EVAL_METRICS.register("cmc")(MetricSpec())
EVAL_METRICS.register("minp")(MetricSpec())
EVAL_METRICS.register("cgm")(MetricSpec(switch="cgm"))
EVAL_METRICS.register("roc")(MetricSpec(switch="roc"))


def unknown_metrics(names: Iterable[str]) -> list[str]:
    """The names that are not in EVAL_METRICS."""
    return [name for name in names if name not in EVAL_METRICS]


def evaluate_switches(names: Iterable[str] | None) -> dict[str, bool]:
    """The `evaluate` keywords the selected metrics need, e.g. {"roc": True}; an unknown name raises RegistryError."""
    specs = [EVAL_METRICS.get(name) for name in names or ()]
    return {spec.switch: True for spec in specs if spec.switch is not None}
