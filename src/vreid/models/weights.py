"""Loading local pretrained weights into any vreid backbone: one function, every supported file format.

Formats: ``.safetensors``; ``.pth/.pt/.bin`` read with ``torch.load(weights_only=True)`` (no pickled code runs);
TorchScript archives (OpenAI's original CLIP ``.pt`` files) read with ``torch.jit.load(map_location='cpu')`` and
reduced to their ``state_dict()`` - TorchScript is a serialized graph, not a pickle, but it is still code from the
file's author: only load archives you trust. Containers (``state_dict``, ``model``, ``module.`` prefixes) are
unwrapped; a backbone may adapt key names through a ``filter_state_dict(state_dict)`` method (timm, CLIP do).
"""
from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from vreid.errors import VreidError

#: Keys under these top-level names are classifier heads; they are dropped when the backbone has no such module.
HEAD_PREFIXES = ("fc", "head", "heads", "classifier", "last_linear", "fc_norm_head")
#: Container keys that hold the real state dict, tried in this order.
CONTAINER_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "module", "net", "params")


class WeightsError(VreidError, RuntimeError):
    """A weights file is missing, unreadable, or does not fit the model; the message names the file."""


def _fmt_keys(keys: list[Any], limit: int = 8) -> str:
    if not keys:
        return "none"
    shown = ", ".join(str(k) for k in keys[:limit])
    return f"{len(keys)}: {shown}" + (f", ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


@dataclass
class LoadReport:
    """What `load_pretrained` did: which model tensors came from the file and which did not."""

    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # classifier heads the backbone does not have
    ignored: int = 0  # file tensors the backbone's own filter set aside (e.g. CLIP's text tower)

    @property
    def ibn_missing(self) -> list[str]:
        return [k for k in self.missing if ".IN." in k or ".BN." in k]

    def summary(self) -> str:
        return (f"{self.path}: loaded {len(self.loaded)} tensors, missing {len(self.missing)}, "
                f"unexpected {len(self.unexpected)}, shape mismatches {len(self.mismatched)}, "
                f"dropped heads {len(self.dropped)}, ignored {self.ignored}")

    def details(self, limit: int = 8) -> str:
        lines = [self.summary(), f"  missing ({_fmt_keys(self.missing, limit)})",
                 f"  unexpected ({_fmt_keys(self.unexpected, limit)})",
                 f"  shape mismatches ({_fmt_keys([f'{k} file {list(a)} model {list(b)}' for k, a, b in self.mismatched], limit)})"]
        if self.ibn_missing:
            lines.append(f"  note: {len(self.ibn_missing)} missing tensors are IBN-a split norms (*.bn1.IN/BN); "
                         "expected when loading plain ResNet weights into an IBN-a model - they start from 1/0")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.details()


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(4):
        if not isinstance(obj, Mapping) or all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a state dict, found {type(obj).__name__}")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsError(f"{path}: no tensors found (top-level keys: {_fmt_keys(list(obj))})")
    for prefix in ("module.", "_orig_mod."):  # DDP / torch.compile wrappers
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    return tensors


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file into a flat {name: tensor} dict on CPU, without executing pickled code."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return _unwrap(load_file(str(path), device="cpu"), path)
        if _is_torchscript(path):
            with warnings.catch_warnings():  # TorchScript is deprecated, but OpenAI's CLIP files need it
                warnings.simplefilter("ignore", FutureWarning)
                return _unwrap(torch.jit.load(str(path), map_location="cpu").state_dict(), path)
        return _unwrap(torch.load(path, map_location="cpu", weights_only=True), path)
    except WeightsError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure becomes one clear message naming the file
        raise WeightsError(f"{path}: cannot read weights ({type(e).__name__}: {str(e).splitlines()[0][:300]})") from e


def _apply_prefix_map(sd: dict[str, torch.Tensor], prefix_map: Mapping[str, str]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        for old, new in prefix_map.items():
            if k.startswith(old):
                k = new + k[len(old):]
                break
        out[k] = v
    return out


def _align_prefix(sd: dict[str, torch.Tensor], target: set[str]) -> dict[str, torch.Tensor]:
    """Strip or add one leading component (``backbone.``, ``model.``, ``base.``) when that matches more keys."""
    best, best_hits = sd, sum(k in target for k in sd)
    candidates = [(p, "") for p in {k.split(".", 1)[0] + "." for k in sd if "." in k}]
    candidates += [("", p) for p in {k.split(".", 1)[0] + "." for k in target if "." in k}]
    for old, new in candidates:
        trial = {(new + k[len(old):]) if k.startswith(old) else k: v for k, v in sd.items()}
        hits = sum(k in target for k in trial)
        if hits > best_hits:
            best, best_hits = trial, hits
    return best


def load_pretrained(model: nn.Module, path: str | Path, *, strict: bool = False,
                    prefix_map: Mapping[str, str] | None = None, min_loaded: float = 0.5) -> LoadReport:
    """Load a local weights file into `model` (in place) and report what matched.

    Parameters
    ----------
    strict: raise unless every model tensor is loaded and every file tensor used (heads dropped aside).
    prefix_map: renames applied first, e.g. ``{"base.": ""}`` for a checkpoint whose backbone lives under ``base``.
    min_loaded: raise when less than this fraction of the model's tensors is found in the file.

    Raises `WeightsError` naming the file, with missing/unexpected/mismatched keys, when the file cannot be read
    or does not fit.
    """
    sd = read_state_dict(path)
    if prefix_map:
        sd = _apply_prefix_map(sd, prefix_map)
    n_before = len(sd)
    if hasattr(model, "filter_state_dict"):
        sd = model.filter_state_dict(sd)
    report = LoadReport(str(path), ignored=n_before - len(sd))
    target = model.state_dict()
    sd = _align_prefix(sd, set(target))

    to_load = {}
    for k, v in sd.items():
        if k in target:
            if tuple(v.shape) == tuple(target[k].shape):
                to_load[k] = v
            else:
                report.mismatched.append((k, tuple(v.shape), tuple(target[k].shape)))
        elif any(part in HEAD_PREFIXES for part in k.split(".")[:2]):  # `fc.*`, or `model.fc.*` in a wrapper
            report.dropped.append(k)
        else:
            report.unexpected.append(k)
    report.loaded = sorted(to_load)
    mismatched = {k for k, _, _ in report.mismatched}
    counted = [k for k in target if not k.endswith("num_batches_tracked")]
    report.missing = [k for k in counted if k not in to_load and k not in mismatched]

    loaded_counted = sum(k in to_load for k in counted)
    if loaded_counted < min_loaded * max(len(counted), 1):
        raise WeightsError(f"{path} does not fit {type(model).__name__}: only {loaded_counted} of {len(counted)} "
                           f"model tensors found in the file\n{report.details()}")
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise WeightsError(f"{path} does not match {type(model).__name__} exactly (strict=True)\n{report.details()}")
    model.load_state_dict(to_load, strict=False)
    return report
