"""The HTML report of an evaluation folder (a finished training run, or `vreid eval -o FOLDER`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

#: What the report reads from the folder, and what each file holds.
EVALUATION_FILES = {
    "results.json": "the metrics",
    "ranked.npz": "the ranked lists",
    "config.yaml": "the config whose data section names the images",
}


def _missing_fix(folder: Path, name: str) -> str:
    # `vreid eval` without -o writes into <run>/eval/<time>-<rerank>; the names sort by time
    below = sorted([*folder.glob(f"eval/{name}"), *folder.glob(f"eval/*/{name}")])
    if below:
        return f"this run's latest evaluation is in {below[-1].parent}: pass that folder"
    return (f"a training run writes it after its final evaluation (finish a stopped run with `vreid train ... "
            f"--resume`), `vreid eval CONFIG --checkpoint {folder} -o FOLDER` writes it into FOLDER; pass such a "
            "folder")


def evaluation_files(folder: str | Path) -> dict[str, Path]:
    """The folder's files by name; CheckpointError naming the missing one and how to get it."""
    from vreid.engine.checkpoint import CheckpointError

    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such folder; pass a training run folder or an evaluation folder "
                              "(`vreid eval ... -o FOLDER`)")
    files = {name: folder / name for name in EVALUATION_FILES}
    for name, path in files.items():
        if not path.is_file():
            raise CheckpointError(f"{path}: not found ({EVALUATION_FILES[name]}); {_missing_fix(folder, name)}")
    return files


def query_attention_maps(method, records: Sequence, data_cfg) -> list[np.ndarray] | None:
    """(M, h, w) maps of each record's image from `method.attention_maps` on the test transform, or None for a
    method without attention maps."""
    import torch

    from vreid.data import build_test_loader

    method.eval()
    maps = []
    with torch.no_grad():
        for batch in build_test_loader(list(records), data_cfg):
            found = method.attention_maps(batch["images"])
            if found is None:
                return None
            maps += list(found.float().cpu().numpy())
    return maps


def run_attention(folder: Path, records: Sequence, data_cfg) -> list[np.ndarray] | None:
    """Attention maps of `records` by the model in `folder` (None when the folder holds no model, e.g. an
    evaluation folder, or the method has none)."""
    if not (folder / "model.safetensors").is_file():
        return None
    from vreid.engine.bundle import load_bundle

    return query_attention_maps(load_bundle(folder), records, data_cfg)


def write_folder_report(folder: str | Path, output: str | Path | None = None, overrides: Sequence[str] = (),
                        queries: int = 6, seed: int = 0) -> Path:
    """Write the report of `folder` (default `folder/report.html`); `overrides` apply to its config.yaml."""
    from vreid.config import load_experiment
    from vreid.engine.checkpoint import CheckpointError
    from vreid.engine.run import load_data
    from vreid.viz.report import pick_queries, ranked_from_lists, write_report

    folder = Path(folder)
    files = evaluation_files(folder)
    results = json.loads(files["results.json"].read_text())
    with np.load(files["ranked.npz"]) as z:
        indices = z["indices"]
        ranked_by = str(z["rerank"]) if "rerank" in z.files else "none"   # older files: plain distances
    cfg = load_experiment(files["config.yaml"], list(overrides))
    dataset = load_data(cfg)
    if len(indices) != len(dataset.query) or (indices.size and indices.max() >= len(dataset.gallery)):
        raise CheckpointError(
            f"{files['ranked.npz']}: ranks {len(indices)} queries, but {cfg.data.root} has {len(dataset.query)} "
            f"queries and {len(dataset.gallery)} gallery images; the dataset is not the one evaluated: pass "
            "data.root=... of that dataset")
    name = cfg.model.name
    junk_rule = results.get("junk_rule", "same_id_same_camera")
    ranked = ranked_from_lists(indices, dataset.query, dataset.gallery, pick_queries(len(indices), queries, seed),
                               drop_same_camera=junk_rule != "none")  # show what the metrics counted
    notes = [f"folder: {folder}",
             f"data: {cfg.data.root} (layout {cfg.data.layout})",
             f"method: {name}, protocol: {results.get('protocol', dataset.protocol)}, junk rule: "
             f"{results.get('junk_rule_text', junk_rule)}",
             f"ranked lists: the top {indices.shape[1]} of ranked.npz, by the distances the evaluation scored "
             f"(metric {cfg.eval.metric}, re-ranking {ranked_by})"]
    #: panels a method leaves in its run folder: (file, title, caption)
    panels = [("residuals.png", "Residuals (SAVER)", "Per vehicle, left to right: the image, the VAE's "
               "reconstruction, the min-max normalised residual, and the Re-ID input mixed from them.")]
    figures = [(title, caption, folder / png) for png, title, caption in panels if (folder / png).is_file()]
    curves = {name: results["cmc"]} if results.get("cmc") is not None else {}
    maps = run_attention(folder, [dataset.query[qi] for qi, _ in ranked], cfg.data)
    attention = list(zip([qi for qi, _ in ranked], maps)) if maps is not None else []
    return write_report(Path(output) if output is not None else folder / "report.html", f"vreid: {folder}",
                        {name: results}, curves, ranked, dataset.query, dataset.gallery, notes, figures,
                        attention, f"Method {name}: its attention_maps, in the model's order.")
