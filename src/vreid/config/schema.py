"""The experiment config: one small dataclass per component, assembled into ExperimentConfig."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vreid.config.loader import (
    ConfigError, FieldError, apply_overrides, attribute_to_override, bounds, build, choices, flatten_mapping, polymorphic,
    read_yaml,
)


def _layouts():
    from vreid.data.layouts import LAYOUTS

    return LAYOUTS


def _methods():
    from vreid.methods import METHODS

    return METHODS


def _schedules():
    from vreid.engine.schedule import SCHEDULES

    return SCHEDULES


def _rerankers():
    from vreid.rerank import RERANKERS

    return ("none", *RERANKERS.names())


def _distances():
    from vreid.eval.distance import DISTANCES

    return DISTANCES


def _protocols():
    from vreid.eval.protocols import PROTOCOLS

    return PROTOCOLS


def _optimizers():
    from vreid.engine.optim import OPTIMIZERS

    return OPTIMIZERS


def _default_metrics() -> list[str]:
    from vreid.eval.selection import DEFAULT_METRICS

    return list(DEFAULT_METRICS)


@dataclass
class TransformConfig:
    """Training augmentation. Test transform = resize + normalise only."""

    flip_prob: float = field(default=0.5, metadata=bounds(0, 1))
    pad: int = field(default=10, metadata=bounds(0))
    color_jitter: float = field(default=0.0, metadata=bounds(0))
    random_erasing: float = field(default=0.5, metadata=bounds(0, 1))
    autoaugment_prob: float = field(default=0.0, metadata=bounds(0, 1))


@dataclass
class DataConfig:
    layout: str = field(default="veri776", metadata=choices(registry=_layouts))
    root: str = ""
    test_size: int | None = None
    height: int = field(default=256, metadata=bounds(16, 4096))
    width: int = field(default=256, metadata=bounds(16, 4096))
    ids_per_batch: int = field(default=16, metadata=bounds(1))
    images_per_id: int = field(default=4, metadata=bounds(1))
    test_batch_size: int = field(default=128, metadata=bounds(1))
    workers: int = field(default=4, metadata=bounds(0, 256))
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    transforms: TransformConfig = field(default_factory=TransformConfig)

    def validate(self) -> None:
        for key in ("mean", "std"):
            if len(getattr(self, key)) != 3:
                raise FieldError(key, f"needs three values (R, G, B), got {getattr(self, key)!r}")
        if any(v <= 0 for v in self.std):
            raise FieldError("std", f"every value must be > 0, got {self.std!r}")


@dataclass
class OptimConfig:
    name: str = field(default="adam", metadata=choices(registry=_optimizers))
    lr: float = field(default=3.5e-4, metadata=bounds(max=10.0, above=0))
    weight_decay: float = field(default=5e-4, metadata=bounds(0))
    momentum: float = field(default=0.9, metadata=bounds(0, 1))
    nesterov: bool = False
    bias_lr_factor: float = field(default=1.0, metadata=bounds(0))
    weight_decay_bias: float = field(default=5e-4, metadata=bounds(0))


@dataclass
class ScheduleConfig:
    name: str = field(default="warmup_multistep", metadata=choices(registry=_schedules))
    epochs: int = field(default=120, metadata=bounds(1))
    warmup_epochs: int = field(default=10, metadata=bounds(0))
    warmup_factor: float = field(default=0.01, metadata=bounds(0, 1))
    milestones: list[int] = field(default_factory=lambda: [40, 70])
    gamma: float = field(default=0.1, metadata=bounds(max=1.0, above=0))
    delay_epochs: int = field(default=0, metadata=bounds(0))
    #: warmup_multistep: the base lr for this many first epochs, then the schedule from scratch (the official MBR
    #: timing: no scheduler while the trunk is frozen, then warmup, milestones counted from there)
    hold_epochs: int = field(default=0, metadata=bounds(0))
    min_lr_factor: float = field(default=0.0, metadata=bounds(0, 1))

    def validate(self) -> None:
        from vreid.engine.schedule import ignored_keys

        for key in ignored_keys(self):
            raise FieldError(key, f"schedule '{self.name}' does not use it (only warmup_cosine does), so it would do "
                                  f"nothing; set schedule.name=warmup_cosine, or remove {key}")


@dataclass
class TrainConfig:
    device: str = field(default="auto", metadata=choices("auto", "cpu", "cuda"))
    amp: bool = True
    grad_clip: float = field(default=0.0, metadata=bounds(0))
    log_every: int = field(default=20, metadata=bounds(1))
    checkpoint_every_steps: int = field(default=0, metadata=bounds(0))
    checkpoint_every_epochs: int = field(default=1, metadata=bounds(0))
    eval_every_epochs: int = field(default=0, metadata=bounds(0))
    steps_per_epoch: int | None = field(default=None, metadata=bounds(1))
    tensorboard: bool = True
    progress: bool = True
    deterministic: bool = False


@dataclass
class EvalConfig:
    #: a name in vreid.eval.distance.DISTANCES; a method that ranks by its own distance sets it (see
    #: MethodConfig.retrieval_metric)
    metric: str = field(default="euclidean", metadata=choices(registry=_distances))
    rerank: str = field(default="none", metadata=choices(registry=_rerankers))
    protocol: str | None = field(default=None, metadata=choices(registry=_protocols))
    flip: bool = False
    top_k: int = field(default=10, metadata=bounds(1))
    rerank_options: dict[str, Any] = field(default_factory=dict)
    #: names in vreid.eval.selection.EVAL_METRICS; cgm and roc add their passes to the retrieval one
    metrics: list[str] = field(default_factory=_default_metrics)

    def validate(self) -> None:
        from vreid.eval.selection import EVAL_METRICS, unknown_metrics
        from vreid.rerank import check_rerank_options

        problem = check_rerank_options(self.rerank, self.rerank_options)
        if problem:
            raise FieldError("rerank_options", problem)
        unknown = unknown_metrics(self.metrics)
        if unknown:
            raise FieldError("metrics", f"{unknown[0]!r} is not one of {', '.join(EVAL_METRICS.names())}")


@dataclass
class ExperimentConfig:
    """Everything one training or evaluation run needs. `model` is the method's own config (by `model.name`)."""

    seed: int = 0
    output_dir: str = "runs/experiment"
    data: DataConfig = field(default_factory=DataConfig)
    model: Any = field(default=None, metadata=polymorphic(_methods))
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        """A method that ranks by its own distance (e.g. musp: weighted_parts) sets `eval.metric` to it."""
        own = self.model.retrieval_metric() if self.model is not None else None
        if own is None or self.eval.metric == own:
            return
        if self.eval.metric != "euclidean":
            raise FieldError("eval.metric", f"method '{self.model.name}' ranks by its own distance '{own}', not "
                                            f"'{self.eval.metric}'; remove eval.metric or set it to {own}")
        self.eval.metric = own


def load_experiment(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML experiment file, apply `key=value` overrides, and build the typed config."""
    data = read_yaml(path) if path is not None else {}
    file_keys = set(flatten_mapping(data))
    data = apply_overrides(data, list(overrides or []))
    model = data.setdefault("model", {})
    if isinstance(model, dict):
        model.setdefault("name", "bot")
    file = str(path) if path is not None else "<defaults>"
    try:
        cfg = build(ExperimentConfig, data, file=file)
    except ConfigError as e:
        raise attribute_to_override(e, list(overrides or [])) from None
    cfg.source = ConfigSource(file, list(overrides or []), file_keys)
    return cfg


@dataclass
class ConfigSource:
    """Where a loaded config came from, so that later checks blame the YAML file or the override that set a key."""

    file: str = "<defaults>"
    overrides: list[str] = field(default_factory=list)
    #: dotted keys the YAML file set (after `_base_` merging)
    file_keys: set[str] = field(default_factory=set)

    def error(self, key: str, detail: str) -> ConfigError:
        """A ConfigError for `key`, naming the override that set it, else the file, else saying it is a default."""
        in_file = any(k == key or k.startswith(key + ".") or key.startswith(k + ".") for k in self.file_keys)
        where = "" if in_file else " (not set, so its default)"
        error = ConfigError(f"{self.file}: key '{key}'{where}: {detail}", file=self.file, key=key, detail=detail)
        return attribute_to_override(error, self.overrides)


def config_error(cfg: Any, key: str, detail: str) -> ConfigError:
    """A ConfigError about `key` of a loaded config (its source, if known, is named)."""
    return getattr(cfg, "source", ConfigSource()).error(key, detail)
