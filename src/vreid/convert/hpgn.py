"""Official HPGN (muzishen/HPGN `network.py`, saved by `main.py` as the `DataParallel` state dict) -> vreid `hpgn`.

Key map (`module.` is stripped when the file is read; s = pyramid scale 1-4 = 16x16, 8x8, 4x4, 2x2 at 256 px,
l = spatial graph layer 1-3):

    model.{conv1,bn1,layerN.M.*}           -> backbone.*                         (torchvision names, plain ResNet-50)
    spatial<s>_gcn<l>.adj / .weight / .bn  -> pyramid.scales.(s-1).layers.(l-1).adjacency / .weight / .norm
    reduction_1.{0,1}, reduction_2.{0,1}   -> global_reduction.{0,1}, pyramid_reduction.{0,1}  (1x1 kernels flattened)
    fc_id_256_1, fc_id_256_2               -> classifier.global, classifier.pyramid

`reduction_3`, `reduction_4`, `fc_id_256_3`, `fc_id_256_4` are built by the official model but never used in its
forward; they are dropped with a note. The official adjacency is a trained parameter, so the converter sets
`model.learnable_adjacency=true`. The normalisation is not saved: it is chosen from the class count (opt.py's
VeRi-776 statistics for 576 classes, its VehicleID defaults otherwise).
"""
from __future__ import annotations

import re

import torch

from vreid.convert.base import CONVERTERS, Converted, ConversionError, Preprocessing
from vreid.methods import MethodConfig

#: opt.py's normalisation: the default (VehicleID) and the VeRi-776 values of its comment
VEHICLEID_STATS = ((0.391, 0.411, 0.411), (0.246, 0.243, 0.243))
VERI776_STATS = ((0.418, 0.323, 0.340), (0.183, 0.160, 0.164))
VERI776_CLASSES = 576

_BN = r"(?:weight|bias|running_mean|running_var|num_batches_tracked)"
_TRUNK = re.compile(r"model\.((?:conv1|bn1|layer[1-4]\.\d+)\..+)")
_GRAPH = re.compile(rf"spatial(\d+)_gcn(\d+)\.(adj|weight|bn\.{_BN})")
_REDUCTION = re.compile(r"reduction_([12])\.([01])\.(.+)")
_CLASSIFIER = re.compile(r"fc_id_256_([12])\.(weight|bias)")
#: built by the official HPGN but unused in its forward
_UNUSED = re.compile(r"(?:reduction_[34]|fc_id_256_[34])\..+")
_BRANCHES = {"1": "global", "2": "pyramid"}
_GRAPH_PARTS = {"adj": "adjacency", "weight": "weight"}


def vreid_key(key: str) -> str | None:
    """The vreid `hpgn` name of an official key, or None when vreid's layout has no place for it."""
    if m := _TRUNK.fullmatch(key):
        return f"backbone.{m[1]}"
    if m := _GRAPH.fullmatch(key):
        part = _GRAPH_PARTS.get(m[3], m[3].replace("bn.", "norm.", 1))
        return f"pyramid.scales.{int(m[1]) - 1}.layers.{int(m[2]) - 1}.{part}"
    if m := _REDUCTION.fullmatch(key):
        return f"{_BRANCHES[m[1]]}_reduction.{m[2]}.{m[3]}"
    if m := _CLASSIFIER.fullmatch(key):
        return f"classifier.{_BRANCHES[m[1]]}.{m[2]}"
    return None


def _scale_nodes(state_dict: dict[str, torch.Tensor]) -> dict[int, int]:
    """Official scale number -> its node count (the width of its graph weights)."""
    return {int(m[1]): int(v.shape[1]) for k, v in state_dict.items()
            if (m := _GRAPH.fullmatch(k)) and m[3] == "weight"}


class HpgnConverter:
    """Official `HPGN` -> vreid `hpgn` with the same pyramid, depth and embedding width."""

    methods = ("hpgn",)

    def implied_settings(self, state_dict: dict[str, torch.Tensor]) -> dict[str, object]:
        settings: dict[str, object] = {"model.name": "hpgn", "model.learnable_adjacency": True}
        nodes = _scale_nodes(state_dict)
        if nodes and 1 in nodes:  # each scale's pooling factor from its node count against the first scale's
            settings["model.pyramid_pools"] = [round((nodes[1] / nodes[s]) ** 0.5) for s in sorted(nodes)]
        depths = [int(m[2]) for k in state_dict if (m := _GRAPH.fullmatch(k))]
        if depths:
            settings["model.sgn_depth"] = max(depths)
        if "reduction_1.0.weight" in state_dict:
            settings["model.embedding_dim"] = int(state_dict["reduction_1.0.weight"].shape[0])
        return settings

    def preprocessing(self, state_dict: dict[str, torch.Tensor]) -> Preprocessing:
        classifier = state_dict.get("fc_id_256_1.weight")
        if classifier is not None and classifier.shape[0] == VERI776_CLASSES:
            return Preprocessing(*VERI776_STATS, "the VeRi-776 mean/std of the official opt.py (576 classes)")
        return Preprocessing(*VEHICLEID_STATS, "the official opt.py default mean/std (VehicleID); the checkpoint "
                                               "saves none")

    def convert(self, state_dict: dict[str, torch.Tensor], cfg: MethodConfig) -> Converted:
        if cfg.name not in self.methods:
            raise ConversionError(f"an official HPGN checkpoint fills vreid's hpgn method, not model.name={cfg.name}; "
                                  "use configs/hpgn/*.yaml")
        out: dict[str, torch.Tensor] = {}
        unplaced, unused = [], []
        for key, value in state_dict.items():
            name = vreid_key(key)
            if name is not None:
                out[name] = value.flatten(1) if _REDUCTION.fullmatch(key) and value.ndim == 4 else value
            elif _UNUSED.fullmatch(key):
                unused.append(key)
            else:
                unplaced.append(key)
        if unplaced:
            raise ConversionError(
                f"{len(unplaced)} HPGN tensors have no place in vreid's hpgn: {', '.join(unplaced[:10])}"
                + (" ..." if len(unplaced) > 10 else "") + "; supported is the official network.py HPGN "
                "(see docs/models.md)")
        notes = []
        if any(k.endswith(".adjacency") for k in out):
            cfg.learnable_adjacency = True  # recorded in model_info.json, so rebuilds keep it
            notes.append("model.learnable_adjacency=true: the official adjacency matrices are trained parameters")
        if unused:
            modules = sorted({k.split(".")[0] for k in unused})
            notes.append(f"{', '.join(modules)}: built but unused in the official forward; not converted")
        notes.append("the official code reads images pre-resized offline, vreid resizes them bilinearly; its test "
                     "feature L2-normalises the sum of the image's and its flip's features, vreid's eval.flip "
                     "averages the two normalised embeddings")
        classifier = out.get("classifier.global.weight")
        return Converted(out, None if classifier is None else int(classifier.shape[0]), notes)


CONVERTERS.register("hpgn")(HpgnConverter())
