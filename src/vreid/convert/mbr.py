"""Official MBR (videturfortuna/vehicle_reid_itsc2023, `MBR_model`) checkpoints -> vreid `mbr`: Baseline, R50 and
BoT 2X / 4X (LBS or classical: MBR-4B, Hybrid-4B), 2G / 4G grouped, 2X2G, and the hybrid conv + MHSA grouped
layer4s (MBR_R50_4G, MBR_2x2G, MBR_2x4G, end_bot_g).

Official layout: `modelup2L3.model.{0,1,4,5,6}` (IBN-Net stem, layer1..3), `modelL4.model.<b>` (branches: layer4
copies, or BoT stacks `<blk>.conv2.0` = MHSA, or grouped layer4s whose `conv2` holds `conv2` + `MHSA_<n>`),
`finalblock.finalblocks.<k>` (a ClassBlock `add_block.0` BN + `classifier.0`, or a bare BN), `finalblock.LAI`.
Embedding j of branch i uses block i + j (the official indexing; 2X2G shares block 1 between two embeddings).
The MHSA position tables swap names: the official `rel_w` (1, heads, d, W, 1) runs along the map's rows, which is
vreid's `rel_h` (heads, d, H, 1), and its `rel_h` along the columns (vreid's `rel_w`); vreid's RelPosMHSA with
`position: official` computes the official logits q_i . k_j + r_i . q_j.
"""
from __future__ import annotations

import re

import torch

from vreid.convert.base import CONVERTERS, Converted, ConversionError, Preprocessing
from vreid.methods import MethodConfig

#: the official transforms normalise 0-1 RGB with 0.5 / 0.5 (nothing of it is saved in the checkpoint)
MBR_MEAN = (0.5, 0.5, 0.5)
MBR_STD = (0.5, 0.5, 0.5)
#: vreid branch kinds with an official layout
SUPPORTED_BRANCHES = ("layer4", "grouped_layer4", "bot_stack", "grouped_mhsa")

_TRUNK_KEY = re.compile(r"modelup2L3\.model\.(\d)\.(.+)")
#: IBN-Net resnet50_ibn_a children up to layer3: 2 is the ReLU, 3 the max-pool (no tensors)
_TRUNK_PARTS = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3"}
_BRANCH_KEY = re.compile(r"modelL4\.model\.(\d+)\.(.+)")
_BLOCK_KEY = re.compile(r"finalblock\.finalblocks\.(\d+)\.(.+)")
_BOT_MHSA = re.compile(r"(\d+)\.conv2\.0\.(.+)")               # a BoT block's MHSA
_HYBRID_CONV = re.compile(r"(\d+)\.conv2\.conv2\.(.+)")           # the conv half of a hybrid 3x3 stage
_HYBRID_MHSA = re.compile(r"(\d+)\.conv2\.MHSA_(\d+)\.(.+)")     # its MHSA parts, numbered from 1
#: the official table name -> vreid's, for the same axis of the map
_POSITION_TABLES = {"rel_w": "rel_h", "rel_h": "rel_w"}
_LAI = "finalblock.LAI"


def _position_table(name: str, value: torch.Tensor) -> tuple[str, torch.Tensor]:
    """An official MHSA tensor name and value -> vreid's (position tables renamed and stripped of the batch dim)."""
    if name in _POSITION_TABLES:
        return _POSITION_TABLES[name], value.reshape(value.shape[1:])
    return name, value


def branch_tensor(rest: str, value: torch.Tensor, kind: str) -> tuple[str, torch.Tensor]:
    """One tensor of an official branch (key after `modelL4.model.<b>.`) -> its key and value in vreid's branch."""
    if kind == "bot_stack" and (m := _BOT_MHSA.fullmatch(rest)):
        name, value = _position_table(m.group(2), value)
        return f"{m.group(1)}.mhsa.{name}", value
    if kind == "grouped_mhsa":
        if m := _HYBRID_CONV.fullmatch(rest):
            return f"{m.group(1)}.conv2.conv.{m.group(2)}", value
        if m := _HYBRID_MHSA.fullmatch(rest):
            name, value = _position_table(m.group(3), value)
            return f"{m.group(1)}.conv2.attention.{int(m.group(2)) - 1}.{name}", value
    return rest, value


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
        if any(k not in SUPPORTED_BRANCHES for k in kinds):
            raise ConversionError(f"branch kinds {', '.join(kinds)}: the official code has layouts for "
                                  f"{', '.join(SUPPORTED_BRANCHES)} only")
        other = [f"model.branches[{i}].options.position={spec.options['position']}"
                 for i, spec in enumerate(cfg.branches) if spec.options.get("position", "official") != "official"]
        if other:
            raise ConversionError(f"{', '.join(other)}: the official MHSA computes r_i . q_j (position: official); "
                                  "drop the option to convert")
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
                b = int(branch.group(1))
                rest, value = branch_tensor(branch.group(2), value, kinds[b])
                out[prefixes[b] + rest] = value
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
