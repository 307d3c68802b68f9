"""`vreid convert` as a library call: a foreign checkpoint + a vreid config -> a run folder eval/extract can use."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vreid.config.schema import ExperimentConfig
from vreid.convert.base import CONVERTERS, ConversionError, Converter, Preprocessing, fit_to_model
from vreid.engine.bundle import save_bundle
from vreid.engine.preflight import check_model_builds
from vreid.engine.run_folder import clear_run_outputs, holds_run
from vreid.fileio import write_json_atomic
from vreid.methods import DataInfo, ReidMethod, build_method
from vreid.models.weights import read_state_dict

#: written next to model.safetensors: which file became this run, and how
CONVERSION_FILE = "conversion.json"


@dataclass
class ConversionReport:
    """What `convert_checkpoint` wrote: the folder, the tensors it took, the preprocessing, and notes."""

    output_dir: Path
    tensors: int
    preprocessing: Preprocessing
    notes: list[str] = field(default_factory=list)


def _without_pretrained(cfg: ExperimentConfig) -> ExperimentConfig:
    """The config with every `pretrained` path cleared: the checkpoint gives all weights, nothing else is read."""
    cfg = copy.deepcopy(cfg)
    todo = [cfg.model]
    while todo:
        obj = todo.pop()
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.name == "pretrained":
                setattr(obj, f.name, None)
            elif dataclasses.is_dataclass(value):
                todo.append(value)
    return cfg


def _settings_fix(converter: Converter, state_dict: dict[str, torch.Tensor], cfg: ExperimentConfig) -> str:
    implied = converter.implied_settings(state_dict)
    given = {"model.name": cfg.model.name}
    for key in implied:
        obj = cfg.model
        for part in key.split(".")[1:]:
            obj = getattr(obj, part, None)
        given[key] = obj
    differ = [f"{k}={v!r} (config: {repr(given.get(k))[:60]})" for k, v in implied.items() if given.get(k) != v]
    return ("use a config (or KEY=VALUE overrides) whose model matches the checkpoint"
            + (f"; the checkpoint implies {', '.join(differ)}" if differ else ""))


def _build(cfg: ExperimentConfig, num_classes: int, pre: Preprocessing) -> ReidMethod:
    info = DataInfo(num_classes=num_classes, height=cfg.data.height, width=cfg.data.width,
                    mean=pre.mean, std=pre.std)
    return build_method(cfg.model, info)


def convert_checkpoint(source: str, checkpoint: str | Path, cfg: ExperimentConfig, output_dir: str | Path,
                       overwrite: bool = False) -> ConversionReport:
    """Convert `checkpoint` (a `source` toolkit's file) into the model `cfg` builds; write it as a run folder."""
    out = Path(output_dir)
    if holds_run(out) and not overwrite:
        raise ConversionError(f"-o {out}: holds a run already (model.safetensors, config.yaml, ...); pass "
                              "--overwrite to replace it, or choose another folder")
    converter = CONVERTERS.get(source)
    cfg = _without_pretrained(cfg)
    check_model_builds(cfg)
    state_dict = read_state_dict(checkpoint)  # torch.load(weights_only=True): no pickled code runs
    converted = converter.convert(state_dict, cfg.model)
    pre = converter.preprocessing(state_dict)
    method = _build(cfg, converted.num_classes or 1, pre)
    weights, notes = fit_to_model(converted, method, _settings_fix(converter, state_dict, cfg))
    method.load_state_dict(weights, strict=True)
    method.eval()
    if overwrite:
        clear_run_outputs(out)
    save_bundle(out, method)
    notes = converted.notes + notes
    write_json_atomic(out / CONVERSION_FILE, {
        "source": source, "checkpoint": str(Path(checkpoint).absolute()), "method": cfg.model.name,
        "preprocessing": {"height": cfg.data.height, "width": cfg.data.width, "mean": list(pre.mean),
                          "std": list(pre.std), "origin": pre.origin},
        "notes": notes,
    })
    return ConversionReport(out, len(converted.state_dict), pre, notes)


__all__ = ["ConversionError", "ConversionReport", "convert_checkpoint"]
