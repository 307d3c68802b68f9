"""Typed configuration: dataclasses per component, YAML files, `key=value` overrides."""
from vreid.config.loader import ConfigError, apply_overrides, build, choices, polymorphic, read_yaml, to_dict
from vreid.config.schema import (
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
    TransformConfig,
    load_experiment,
)

__all__ = [
    "ConfigError", "apply_overrides", "build", "choices", "polymorphic", "read_yaml", "to_dict",
    "DataConfig", "EvalConfig", "ExperimentConfig", "OptimConfig", "ScheduleConfig", "TrainConfig",
    "TransformConfig", "load_experiment",
]
