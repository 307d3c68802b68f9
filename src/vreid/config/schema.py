"""The experiment config: one small dataclass per component, assembled into ExperimentConfig."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vreid.config.loader import apply_overrides, build, choices, polymorphic, read_yaml


def _layouts():
    from vreid.data.layouts import LAYOUTS

    return LAYOUTS


def _methods():
    from vreid.methods import METHODS

    return METHODS


def _schedules():
    from vreid.engine.schedule import SCHEDULES

    return SCHEDULES


def _optimizers():
    from vreid.engine.optim import OPTIMIZERS

    return OPTIMIZERS


@dataclass
class TransformConfig:
    """Training augmentation. Test transform = resize + normalise only."""

    flip_prob: float = 0.5
    pad: int = 10
    color_jitter: float = 0.0
    random_erasing: float = 0.5
    autoaugment_prob: float = 0.0


@dataclass
class DataConfig:
    layout: str = field(default="veri776", metadata=choices(registry=_layouts))
    root: str = ""
    test_size: int | None = None
    height: int = 256
    width: int = 256
    ids_per_batch: int = 16
    images_per_id: int = 4
    test_batch_size: int = 128
    workers: int = 4
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    transforms: TransformConfig = field(default_factory=TransformConfig)

    def validate(self) -> None:
        if self.ids_per_batch < 1 or self.images_per_id < 1:
            raise ValueError("ids_per_batch and images_per_id must be >= 1")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need three values (R, G, B)")


@dataclass
class OptimConfig:
    name: str = field(default="adam", metadata=choices(registry=_optimizers))
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    momentum: float = 0.9
    nesterov: bool = False
    bias_lr_factor: float = 1.0
    weight_decay_bias: float = 5e-4


@dataclass
class ScheduleConfig:
    name: str = field(default="warmup_multistep", metadata=choices(registry=_schedules))
    epochs: int = 120
    warmup_epochs: int = 10
    warmup_factor: float = 0.01
    milestones: list[int] = field(default_factory=lambda: [40, 70])
    gamma: float = 0.1
    delay_epochs: int = 0
    min_lr_factor: float = 0.0


@dataclass
class TrainConfig:
    device: str = field(default="auto", metadata=choices("auto", "cpu", "cuda"))
    amp: bool = True
    grad_clip: float = 0.0
    log_every: int = 20
    checkpoint_every_steps: int = 0
    checkpoint_every_epochs: int = 1
    eval_every_epochs: int = 0
    steps_per_epoch: int | None = None
    tensorboard: bool = True
    progress: bool = True
    deterministic: bool = False


@dataclass
class EvalConfig:
    metric: str = field(default="euclidean", metadata=choices("euclidean", "cosine"))
    rerank: str = "none"
    protocol: str | None = None
    flip: bool = False
    top_k: int = 10
    rerank_options: dict[str, Any] = field(default_factory=dict)


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


def load_experiment(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML experiment file, apply `key=value` overrides, and build the typed config."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, list(overrides or []))
    model = data.setdefault("model", {})
    if isinstance(model, dict):
        model.setdefault("name", "bot")
    return build(ExperimentConfig, data, file=str(path) if path is not None else "<overrides>")
