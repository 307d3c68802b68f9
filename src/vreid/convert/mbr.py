"""Official MBR (videturfortuna/vehicle_reid_itsc2023, `MBR_model`) checkpoints -> vreid `mbr`, for the
architectures whose branches are ResNet layer4s: Baseline, R50 2X / 4X (LBS or classical), 2G / 4G grouped, 2X2G.

Official layout: `modelup2L3.model.{0,1,4,5,6}` (IBN-Net stem, layer1..3), `modelL4.model.<b>` (branches),
`finalblock.finalblocks.<k>` (a ClassBlock `add_block.0` BN + `classifier.0`, or a bare BN), `finalblock.LAI`.
Embedding j of branch i uses block i + j (the official indexing; 2X2G shares block 1 between two embeddings).
"""
from __future__ import annotations

import re

import torch

from vreid.convert.base import CONVERTERS, Converted, ConversionError, Preprocessing
from vreid.methods import MethodConfig

#: the official transforms normalise 0-1 RGB with 0.5 / 0.5 (nothing of it is saved in the checkpoint)
MBR_MEAN = (0.5, 0.5, 0.5)
MBR_STD = (0.5, 0.5, 0.5)
#: vreid branch kinds with the official R50 / grouped layer4 layout
SUPPORTED_BRANCHES = ("layer4", "grouped_layer4")

_TRUNK_KEY = re.compile(r"modelup2L3\.model\.(\d)\.(.+)")
#: IBN-Net resnet50_ibn_a children up to layer3: 2 is the ReLU, 3 the max-pool (no tensors)
_TRUNK_PARTS = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3"}
_BRANCH_KEY = re.compile(r"modelL4\.model\.(\d+)\.(.+)")
_BLOCK_KEY = re.compile(r"finalblock\.finalblocks\.(\d+)\.(.+)")
_ATTENTION = re.compile(r"\d+\.conv2\.(?:\d+|MHSA_\d)\.")  # BoT stacks and hybrid MHSA convs
_LAI = "finalblock.LAI"


def _block_norm(block: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
    """The BatchNorm tensors of one official final block: a ClassBlock's `add_block.0`, or a bare BN."""
    if any(k.startswith("add_block.1.") for k in block) or block.get("add_block.0.weight", torch.ones(1)).ndim != 1:
        raise ConversionError(f"finalblock.finalblocks.{index}: has a linear_num MLP before its BN; vreid's mbr "
                              "has no such projection (every official config leaves linear_num off)")
    if any(k.startswith("add_block.") for k in block):
        return {k.removeprefix("add_block.0."): v for k, v in block.items() if k.startswith("add_block.0.")}
    return {k: v for k, v in block.items() if not k.startswith("classifier.")}


class MbrConverter:
    """Official `MBR_model` -> vreid `mbr` with the same branches (layer4 copies or grouped layer4s)."""

    methods = ("mbr",)

    def implied_settings(self, state_dict: dict[str, torch.Tensor]) -> dict[str, object]:
        branches = sorted({int(m.group(1)) for k in state_dict if (m := _BRANCH_KEY.fullmatch(k))})
        settings: dict[str, object] = {"model.name": "mbr", "model.branches": f"{len(branches)} branch(es)"}
        first = state_dict.get("modelL4.model.0.0.conv1.weight")
        trunk_out = state_dict.get("modelup2L3.model.6.0.conv3.weight")
        if first is not None and trunk_out is not None:
            groups = trunk_out.shape[0] // first.shape[1]
            settings["model.branches"] += f", {groups} group(s) each" if groups > 1 else ", not grouped"
        if _LAI in state_dict:
            settings["model.metadata_cameras * model.metadata_viewpoints"] = int(state_dict[_LAI].shape[1])
        return settings

    def preprocessing(self, state_dict: dict[str, torch.Tensor]) -> Preprocessing:
        return Preprocessing(MBR_MEAN, MBR_STD, "the official repository's Normalize(0.5, 0.5)")

    def convert(self, state_dict: dict[str, torch.Tensor], cfg: MethodConfig) -> Converted:
        if cfg.name not in self.methods:
            raise ConversionError(f"an official MBR checkpoint fills vreid's mbr method, not model.name={cfg.name}; "
                                  "use configs/mbr/*.yaml")
        kinds = [spec.kind for spec in cfg.branches]
        if any(k not in SUPPORTED_BRANCHES for k in kinds) or any(_ATTENTION.match(k.split(".", 3)[-1])
                                                                  for k in state_dict if _BRANCH_KEY.fullmatch(k)):
            raise ConversionError(
                "BoT / hybrid MHSA branches cannot be converted: the official MHSA adds r_i . q_j (its position "
                "term is matmul(r^T, q)), vreid's RelPosMHSA q_i . r_j, so the embeddings would differ; supported "
                f"are branches of kind {', '.join(SUPPORTED_BRANCHES)} (config has {', '.join(kinds)})")
        prefixes = [f"branches.{i}." + ("branch." if spec.options.get("input_roll") else "")
                    for i, spec in enumerate(cfg.branches)]
        out: dict[str, torch.Tensor] = {}
        blocks: dict[int, dict[str, torch.Tensor]] = {}
        unplaced = []
        for key, value in state_dict.items():
            trunk, branch, block = _TRUNK_KEY.fullmatch(key), _BRANCH_KEY.fullmatch(key), _BLOCK_KEY.fullmatch(key)
            if trunk and trunk.group(1) in _TRUNK_PARTS:
                out[f"backbone.{_TRUNK_PARTS[trunk.group(1)]}.{trunk.group(2)}"] = value
            elif branch and int(branch.group(1)) < len(prefixes):
                out[prefixes[int(branch.group(1))] + branch.group(2)] = value
            elif block:
                blocks.setdefault(int(block.group(1)), {})[block.group(2)] = value
            elif key == _LAI and value.shape[0] == len(prefixes):
                out.update({f"metadata.{i}": value[i] for i in range(len(prefixes))})
            else:
                unplaced.append(key)
        if unplaced:
            raise ConversionError(f"{len(unplaced)} MBR tensors have no place in the configured mbr model: "
                                  f"{', '.join(unplaced[:10])}{' ...' if len(unplaced) > 10 else ''}; check that "
                                  "model.branches has as many branches (and metadata) as the checkpoint")
        notes, used, classes = [], set(), None
        e = 0
        for i, spec in enumerate(cfg.branches):
            for j, emb in enumerate(spec.embeddings):
                k = i + j
                if k not in blocks:
                    raise ConversionError(f"finalblock.finalblocks.{k} (embedding {e}) is missing from the "
                                          "checkpoint; model.branches lists more embeddings than it holds")
                out.update({f"heads.{e}.neck.bn.{n}": v for n, v in _block_norm(blocks[k], k).items()})
                if emb.ce > 0 and "classifier.0.weight" in blocks[k]:
                    out[f"heads.{e}.classifier.weight"] = blocks[k]["classifier.0.weight"]
                    classes = int(blocks[k]["classifier.0.weight"].shape[0])
                used.add(k)
                e += 1
        unused = sorted(set(blocks) - used)
        if unused:
            notes.append(f"finalblock.finalblocks {unused}: no embedding reads them in the official forward "
                         "either; not converted")
        return Converted(out, classes, notes)


CONVERTERS.register("mbr")(MbrConverter())
