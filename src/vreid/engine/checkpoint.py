"""Checkpoints as safetensors (tensors) + JSON (everything else), written atomically.

A training checkpoint is a folder `checkpoints/step-<N>/` holding `model.safetensors`, `state.safetensors`
(optimizer, scaler, hook and RNG tensors) and `state.json` (the rest). It is written under a temporary name
and renamed; only then does `checkpoints/last.json` (itself replaced atomically) point at it, so a run
killed at any moment leaves the previous checkpoint intact.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from vreid.errors import VreidError
from vreid.fileio import atomic_path, give_default_mode, write_json_atomic

TENSOR_TAG = "__tensor__"
TUPLE_TAG = "__tuple__"


class CheckpointError(VreidError, RuntimeError):
    """A checkpoint is missing, incomplete or does not fit; the message names the file and the fix."""


def flatten_state(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "s") -> Any:
    """Move every tensor of a nested dict/list/tuple into `tensors`; return a JSON-able skeleton."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {TENSOR_TAG: prefix}
    if isinstance(obj, np.ndarray):
        tensors[prefix] = torch.from_numpy(np.ascontiguousarray(obj))
        return {TENSOR_TAG: prefix, "numpy": True}
    if isinstance(obj, dict):
        return {"__dict__": [[flatten_state(k, tensors, f"{prefix}.k{i}"), flatten_state(v, tensors, f"{prefix}.{i}")]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {TUPLE_TAG: [flatten_state(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten_state(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    return obj


def unflatten_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if TENSOR_TAG in obj:
            t = tensors[obj[TENSOR_TAG]]
            return t.numpy() if obj.get("numpy") else t
        if TUPLE_TAG in obj:
            return tuple(unflatten_state(v, tensors) for v in obj[TUPLE_TAG])
        if "__dict__" in obj:
            return {unflatten_state(k, tensors): unflatten_state(v, tensors) for k, v in obj["__dict__"]}
        return {k: unflatten_state(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unflatten_state(v, tensors) for v in obj]
    return obj


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy"]
    np.random.set_state(tuple(np_state))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_model_weights(path: str | os.PathLike, model: torch.nn.Module, metadata: dict[str, str] | None = None) -> None:
    """Model state dict to one safetensors file, atomically. Shared storage is cloned (safetensors refuses it)."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata or {})


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a truncated or foreign file is a CheckpointError naming it."""
    from safetensors import SafetensorError

    try:
        return load_file(str(path))
    except SafetensorError as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); it is truncated or of another "
                              "format: use another checkpoint, or re-export the weights") from None


def load_model_weights(path: str | os.PathLike, model: torch.nn.Module, strict: bool = True) -> None:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: model weights not found; pass a run folder, a checkpoint folder or a .safetensors file")
    state = read_safetensors(path)
    result = model.load_state_dict(state, strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f"missing keys ({len(result.missing_keys)}): {', '.join(result.missing_keys[:8])}")
    if result.unexpected_keys:
        problems.append(f"unexpected keys ({len(result.unexpected_keys)}): {', '.join(result.unexpected_keys[:8])}")
    if strict and problems:
        raise CheckpointError(
            f"{path}: weights do not fit this model ({'; '.join(problems)}); check that the config's model section "
            "matches the one the weights were trained with (see config.yaml next to them)"
        )


def save_training_checkpoint(root: str | os.PathLike, step: int, model: torch.nn.Module, state: dict[str, Any],
                             keep: int = 2) -> Path:
    """Write checkpoints/step-<step>/ atomically and point checkpoints/last.json at it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".step-{step:08d}.", dir=root))
    try:
        save_model_weights(tmp / "model.safetensors", model)
        tensors: dict[str, torch.Tensor] = {}
        skeleton = flatten_state(state, tensors)
        with atomic_path(tmp / "state.safetensors") as t:
            save_file(tensors, str(t))
        write_json_atomic(tmp / "state.json", skeleton)
        give_default_mode(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    write_json_atomic(root / "last.json", {"step": step, "folder": final.name})
    old = sorted(p for p in root.glob("step-*") if p.is_dir() and p != final)
    for p in old[: max(len(old) - (keep - 1), 0)]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The folder `last.json` points at, or else the newest step-* folder; None when there is none."""
    candidates = checkpoint_candidates(root)
    return candidates[0] if candidates else None


def checkpoint_candidates(root: str | os.PathLike) -> list[Path]:
    """Checkpoint folders newest first: the one `last.json` names (if it is readable and exists), then step-*."""
    root = Path(root)
    named: Path | None = None
    try:
        named = root / json.loads((root / "last.json").read_text())["folder"]
    except (OSError, ValueError, KeyError, TypeError):
        named = None  # a damaged or missing pointer: fall back to the folders themselves
    steps = sorted((p for p in root.glob("step-*") if p.is_dir()), reverse=True)
    ordered = ([named] if named is not None and named.is_dir() else []) + [p for p in steps if p != named]
    return ordered


def remove_stale_temporaries(root: str | os.PathLike) -> list[Path]:
    """Delete half-written checkpoint folders and files a killed run left (`.step-*`, `.*.tmp`)."""
    root = Path(root)
    stale = list(root.glob(".step-*")) + list(root.glob(".*.tmp"))
    for p in stale:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return stale


def load_latest_intact(root: str | os.PathLike, model: torch.nn.Module) -> tuple[Path, dict[str, Any], list[str]]:
    """Load the newest checkpoint that reads completely: (folder, state, reasons the newer ones were skipped)."""
    skipped: list[str] = []
    for folder in checkpoint_candidates(root):
        try:
            return folder, load_training_checkpoint(folder, model), skipped
        except (CheckpointError, OSError, ValueError, KeyError) as e:
            skipped.append(f"{folder.name}: {e}")
    detail = f" (unusable: {'; '.join(skipped)})" if skipped else ""
    raise CheckpointError(f"{Path(root)}: no intact checkpoint to resume from{detail}; run without --resume "
                          "(with --overwrite to replace the run), or point output_dir at the run to continue")


def load_training_checkpoint(folder: str | os.PathLike, model: torch.nn.Module) -> dict[str, Any]:
    folder = Path(folder)
    for name in ("model.safetensors", "state.safetensors", "state.json"):
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder / name}: missing; this checkpoint folder is incomplete, resume from another one")
    load_model_weights(folder / "model.safetensors", model)
    tensors = read_safetensors(folder / "state.safetensors")
    return unflatten_state(json.loads((folder / "state.json").read_text()), tensors)
