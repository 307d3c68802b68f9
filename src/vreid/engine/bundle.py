"""A trained model on disk: `model.safetensors` + `model_info.json` (method config and data info), enough to rebuild it."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from vreid.config.loader import build
from vreid.engine.checkpoint import CheckpointError, latest_checkpoint, load_model_weights, save_model_weights
from vreid.fileio import write_json_atomic
from vreid.methods import METHODS, DataInfo, ReidMethod


def write_model_info(folder: str | Path, method: ReidMethod) -> None:
    """`model_info.json`: the method config and data info that rebuild the model (and its preprocessing)."""
    write_json_atomic(
        Path(folder) / "model_info.json",
        {"method": dataclasses.asdict(method.cfg), "data": dataclasses.asdict(method.info)},
    )


def save_bundle(folder: str | Path, method: ReidMethod) -> None:
    save_model_weights(Path(folder) / "model.safetensors", method)
    write_model_info(folder, method)


def foreign_weights_error(path: Path) -> CheckpointError:
    """The one error for a file vreid did not write (a FastReID .pth, ...): it must be converted first."""
    from vreid.convert import CONVERTERS

    return CheckpointError(
        f"{path}: not a vreid model (a vreid run holds model.safetensors + model_info.json); convert a checkpoint "
        f"of another toolkit first: vreid convert --from {'|'.join(CONVERTERS.names())} {path} --config CONFIG "
        "-o RUN_DIR, then pass -c RUN_DIR"
    )


def resolve_weights(path: str | Path) -> Path:
    """A run folder, a checkpoint folder or a .safetensors file -> the weights file to load."""
    path = Path(path)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise foreign_weights_error(path)
        return path
    if (path / "model.safetensors").is_file():
        return path / "model.safetensors"
    last = latest_checkpoint(path / "checkpoints")
    if last is not None:
        return last / "model.safetensors"
    raise CheckpointError(
        f"{path}: no model.safetensors here or in {path / 'checkpoints'}; pass the output folder of a "
        "finished `vreid train` run, one of its checkpoints/step-* folders, or a .safetensors file"
    )


def load_bundle(path: str | Path) -> ReidMethod:
    """Rebuild a method from a run folder (or its model.safetensors) using the saved model_info.json."""
    weights = resolve_weights(path)
    info_file = next((p / "model_info.json" for p in (weights.parent, weights.parent.parent.parent)
                      if (p / "model_info.json").is_file()), None)
    if info_file is None:
        raise CheckpointError(f"{weights.parent / 'model_info.json'}: missing; it is written by `vreid train` next to "
                              "model.safetensors and says how to rebuild the model")
    info = json.loads(info_file.read_text())
    method_cls = METHODS.get(info["method"]["name"])
    cfg = build(method_cls.Config, info["method"], file=str(info_file), prefix="method")
    data = info["data"]
    data_info = DataInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
    method = method_cls(cfg, data_info)
    load_model_weights(weights, method)
    return method.eval()
