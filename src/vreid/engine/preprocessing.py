"""Evaluate with the preprocessing a model was trained with: its `model_info.json` wins over the config."""
from __future__ import annotations

import copy
from typing import Iterable

from vreid.config.schema import ExperimentConfig
from vreid.methods import DataInfo

#: Config keys of the test transform, and the DataInfo field that records each for a trained model.
PREPROCESSING_KEYS = {"data.height": "height", "data.width": "width", "data.mean": "mean", "data.std": "std"}


def _same(a: object, b: object) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(abs(float(x) - float(y)) < 1e-9 for x, y in zip(a, b))
    return a == b


def model_preprocessing(cfg: ExperimentConfig, info: DataInfo,
                        explicit: Iterable[str] = ()) -> tuple[ExperimentConfig, list[str]]:
    """(config whose test transform is the model's, one note per value that differs from the config's).

    Keys in `explicit` (set on the command line) keep the config's value: the user asked for it.
    """
    explicit = set(explicit)
    out = copy.deepcopy(cfg)
    notes = []
    for key, attr in PREPROCESSING_KEYS.items():
        field = key.split(".", 1)[1]
        mine, theirs = getattr(cfg.data, field), getattr(info, attr)
        if _same(mine, theirs):
            continue
        if key in explicit:
            notes.append(f"{key}={mine} from the command line, although the model was trained with {theirs}")
            continue
        setattr(out.data, field, list(theirs) if isinstance(mine, list) else theirs)
        notes.append(f"{key}: using the model's {theirs} (model_info.json), not the config's {mine}; "
                     f"pass {key}=... to force another")
    return out, notes
