"""What every converter provides, and the one check that a converted state dict fits the vreid model exactly."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from vreid.errors import VreidError
from vreid.methods import MethodConfig
from vreid.registry import Registry

#: modules of vreid methods used only by training losses (identity classifiers, center-loss centers): a
#: checkpoint may lack them, or hold them for another class count, without changing an embedding
TRAINING_ONLY_MODULES = ("classifier", "center")


def renamed(key: str, renames) -> str | None:
    """The new name of `key` by the first (compiled pattern, rename(match)) pair that matches it whole; None if none."""
    for pattern, rename in renames:
        m = pattern.fullmatch(key)
        if m:
            return rename(m)
    return None


def training_only(key: str) -> bool:
    return any(part in TRAINING_ONLY_MODULES for part in key.split(".")[:-1])


class ConversionError(VreidError, RuntimeError):
    """A foreign checkpoint cannot become this vreid model; the message lists the keys and the fix."""


@dataclass(frozen=True)
class Preprocessing:
    """The source's test-time normalisation on vreid's 0-1 RGB input, and where it came from."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    origin: str


@dataclass
class Converted:
    """A vreid state dict, the class count its classifier was trained on (None: no classifier), and notes."""

    state_dict: dict[str, torch.Tensor]
    num_classes: int | None
    notes: list[str] = field(default_factory=list)


class Converter(Protocol):
    """Turns one toolkit's checkpoint into a vreid state dict for the method a config builds."""

    #: vreid method names whose layout this source can fill
    methods: tuple[str, ...]

    def convert(self, state_dict: dict[str, torch.Tensor], cfg: MethodConfig) -> Converted: ...

    def preprocessing(self, state_dict: dict[str, torch.Tensor]) -> Preprocessing: ...

    def implied_settings(self, state_dict: dict[str, torch.Tensor]) -> dict[str, object]:
        """The config values (dotted keys) that the checkpoint's layout implies, for error messages."""
        ...


#: source name (``vreid convert --from NAME``) -> converter instance
CONVERTERS: Registry[Converter] = Registry("checkpoint source")


def _listed(keys: list[str], limit: int = 10) -> str:
    shown = ", ".join(keys[:limit])
    return f"{len(keys)}: {shown}" + (f", ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def fit_to_model(converted: Converted, model: nn.Module, fix: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(complete state dict for `model`, notes); a ConversionError unless every weight that shapes the embedding
    comes from the checkpoint with the model's shape and no checkpoint tensor is left over.

    `num_batches_tracked` counters (absent from some old files) and training-only states the checkpoint lacks or
    holds for another class count are taken from the freshly built model: neither changes an embedding.
    """
    target = model.state_dict()
    source = converted.state_dict
    notes: list[str] = []
    unexpected = sorted(k for k in source if k not in target)
    mismatched = sorted(f"{k} (checkpoint {list(v.shape)}, model {list(target[k].shape)})" for k, v in source.items()
                        if k in target and v.shape != target[k].shape and not training_only(k))
    missing = sorted(k for k in target if k not in source and not k.endswith("num_batches_tracked")
                     and not training_only(k))
    if unexpected or mismatched or missing:
        parts = [f"missing ({_listed(missing)})" if missing else "",
                 f"unexpected ({_listed(unexpected)})" if unexpected else "",
                 f"shape mismatches ({_listed(mismatched)})" if mismatched else ""]
        raise ConversionError("the checkpoint does not fit the model the config builds: "
                              + "; ".join(p for p in parts if p) + f". Fix: {fix}")
    full = dict(source)
    for key, value in target.items():
        if training_only(key) and (key not in full or full[key].shape != value.shape):
            full[key] = value
            notes.append(f"{key}: not in the checkpoint (or for another class count), left as initialised; it "
                         "serves only a training loss, embeddings are unaffected")
        elif key not in full:
            full[key] = value
    return full, notes
