"""FastReID (JDAI-CV/fast-reid) Baseline checkpoints -> vreid `bot` / `sbs`: BoT and SBS, ResNet-50 with or
without IBN-a, with or without non-local blocks, GAP or GeM, BNNeck, linear or margin classifier.

FastReID normalises inside the model, on 0-255 RGB input (`pixel_mean` / `pixel_std` buffers); vreid feeds 0-1
RGB, so those buffers become the run's preprocessing divided by 255 and are not kept as weights.
"""
from __future__ import annotations

import re

import torch

from vreid.convert.base import CONVERTERS, Converted, ConversionError, Preprocessing
from vreid.methods import MethodConfig

#: FastReID's MODEL.PIXEL_MEAN / PIXEL_STD defaults (0-255), used when a checkpoint has no buffers (newer
#: FastReID registers them non-persistent, so they are not saved)
DEFAULT_PIXEL_MEAN = (123.675, 116.28, 103.53)
DEFAULT_PIXEL_STD = (58.395, 57.12, 57.375)
#: FastReID's GeneralizedMeanPooling exponent when the head's p is fixed (no `heads.pool_layer.p` saved)
DEFAULT_GEM_P = 3.0

#: the known differences that no weight can carry; printed with every conversion
STEM_NOTE = ("model.backbone.options.stem_pool=ceil: FastReID's stem max-pools with ceil_mode and no padding; "
             "FastReID resizes test images bicubically, vreid bilinearly, so numbers on real images may move slightly")

_NON_LOCAL = re.compile(r"backbone\.NL_([1-4])\.(\d+)\.(g|theta|phi|W\.0|W\.1)\.(.+)")
_NON_LOCAL_PARTS = {"g": "g", "theta": "theta", "phi": "phi", "W.0": "out.0", "W.1": "out.1"}
_RESIDUAL_BLOCK = re.compile(r"backbone\.layer([1-4])\.(\d+)\.")
#: FastReID key pattern -> vreid key; the trunk keeps torchvision's names in both
_RENAMES = (
    (re.compile(r"backbone\.((?:conv1|bn1|layer[1-4]\.\d+)\..+)"), r"backbone.\1"),
    (re.compile(r"heads\.bottleneck\.0\.(.+)"), r"neck.bn.\1"),  # BNNeck (BatchNorm2d on the pooled map)
    (re.compile(r"heads\.pool_layer\.p"), "pool.p"),  # GeneralizedMeanPoolingP
    (re.compile(r"heads\.(?:classifier\.)?weight"), "classifier.weight"),  # v1 head / older CircleSoftmax
)
_PREPROCESSING_KEYS = ("pixel_mean", "pixel_std")


def _count(pattern: re.Pattern, keys: list[str], group: int) -> dict[str, int]:
    """Per stage: one more than the largest block index that `pattern` finds (0 when none)."""
    counts = {str(s): 0 for s in range(1, 5)}
    for key in keys:
        m = pattern.match(key)
        if m:
            counts[m.group(1)] = max(counts[m.group(1)], int(m.group(group)) + 1)
    return counts


def non_local_positions(keys: list[str]) -> dict[tuple[str, int], int]:
    """(stage, FastReID NL index) -> residual block it follows: NL_k_idx = the last n blocks, in order."""
    blocks, non_local = _count(_RESIDUAL_BLOCK, keys, 2), _count(_NON_LOCAL, keys, 2)
    return {(stage, j): blocks[stage] - n + j for stage, n in non_local.items() for j in range(n)}


def vreid_key(key: str, positions: dict[tuple[str, int], int]) -> str | None:
    """The vreid name of a FastReID key, or None when the layout has no place for it."""
    m = _NON_LOCAL.fullmatch(key)
    if m:
        stage, j, part, rest = m.groups()
        return f"backbone.layer{stage}.non_local.{positions[(stage, int(j))]}.{_NON_LOCAL_PARTS[part]}.{rest}"
    for pattern, replacement in _RENAMES:
        if pattern.fullmatch(key):
            return pattern.sub(replacement, key)
    return None


class FastReIDConverter:
    """FastReID `Baseline` (ResNet backbone + EmbeddingHead) -> vreid `bot` (no non-local) or `sbs`."""

    methods = ("bot", "sbs")

    def implied_settings(self, state_dict: dict[str, torch.Tensor]) -> dict[str, object]:
        keys = list(state_dict)
        non_local = _count(_NON_LOCAL, keys, 2)
        ibn = any(".bn1.IN." in k for k in keys)
        blocks = [b for b in _count(_RESIDUAL_BLOCK, keys, 2).values()]
        depth = {(3, 4, 6, 3): "resnet50", (3, 4, 23, 3): "resnet101"}.get(tuple(blocks), f"resnet({blocks})")
        settings: dict[str, object] = {
            "model.name": "sbs" if any(non_local.values()) else "bot",
            "model.backbone.name": depth + ("_ibn_a" if ibn else ""),
            "model.neck_feat": "after",
        }
        if "heads.pool_layer.p" in state_dict:  # without it: GAP or a fixed-p GeM, the weights cannot tell
            settings["model.pooling"] = "gem"
        if any(non_local.values()):
            settings["model.non_local"] = [non_local[str(s)] for s in range(1, 5)]
            g = [v for k, v in state_dict.items() if _NON_LOCAL.fullmatch(k) and ".g.weight" in k]
            widths = {int(w.shape[0]) for w in g}
            if len(widths) == 1:   # FastReID's Non_local: one inner channel in every block
                settings["model.non_local_inner_channels"] = widths.pop()
                settings["model.non_local_reduction"] = None
            else:                  # widths that follow the stage: channels // reduction
                settings["model.non_local_reduction"] = max(int(w.shape[1] // w.shape[0]) for w in g)
        return settings

    def preprocessing(self, state_dict: dict[str, torch.Tensor]) -> Preprocessing:
        if all(k in state_dict for k in _PREPROCESSING_KEYS):
            mean, std = (state_dict[k].flatten().tolist() for k in _PREPROCESSING_KEYS)
            origin = "the checkpoint's pixel_mean / pixel_std"
        else:
            mean, std = list(DEFAULT_PIXEL_MEAN), list(DEFAULT_PIXEL_STD)
            origin = "FastReID's default PIXEL_MEAN / PIXEL_STD (the checkpoint saves none)"
        if len(mean) != 3 or len(std) != 3:
            raise ConversionError(f"pixel_mean / pixel_std hold {len(mean)} / {len(std)} values; three (RGB) "
                                  "are expected: is this a FastReID image model?")
        # FastReID: (x255 - m) / s; vreid: (x255 / 255 - m / 255) / (s / 255), the same numbers. 8 digits give
        # back the decimals of FastReID's config (123.675, not float32's 123.67500305)
        return Preprocessing(tuple(float(f"{v:.8g}") / 255.0 for v in mean),
                             tuple(float(f"{v:.8g}") / 255.0 for v in std), origin)

    def convert(self, state_dict: dict[str, torch.Tensor], cfg: MethodConfig) -> Converted:
        if cfg.name not in self.methods:
            raise ConversionError(f"a FastReID Baseline checkpoint fills vreid's {' or '.join(self.methods)} "
                                  f"methods, not model.name={cfg.name}; use configs/bot/*.yaml or configs/sbs/*.yaml")
        if getattr(cfg, "neck_feat", "after") != "after":
            raise ConversionError("FastReID embeds with the BNNeck output at test time; set model.neck_feat=after")
        backbone = getattr(cfg, "backbone", None)
        if backbone is not None:  # FastReID v1's stem pool; recorded in model_info.json, so rebuilds keep it
            backbone.options = {**backbone.options, "stem_pool": "ceil"}
        positions = non_local_positions(list(state_dict))
        out: dict[str, torch.Tensor] = {}
        unplaced = []
        for key, value in state_dict.items():
            if key in _PREPROCESSING_KEYS:
                continue
            name = vreid_key(key, positions)
            if name is None:
                unplaced.append(key)
            else:
                out[name] = value
        if unplaced:
            raise ConversionError(
                f"{len(unplaced)} FastReID tensors have no place in vreid's {cfg.name}: {', '.join(unplaced[:10])}"
                + (" ..." if len(unplaced) > 10 else "") + "; supported are ResNet (IBN-a, non-local) backbones "
                "with an EmbeddingHead without EMBEDDING_DIM reduction (see docs/models.md)")
        notes = [STEM_NOTE]
        if "pool.p" in out:
            out["pool.p"] = out["pool.p"].reshape(())  # GeneralizedMeanPoolingP keeps p as shape (1,)
        elif getattr(cfg, "pooling", None) == "gem":
            out["pool.p"] = torch.tensor(DEFAULT_GEM_P)
            notes.append(f"pool.p: the checkpoint has no GeM exponent (FastReID's fixed-p GeneralizedMeanPooling); "
                         f"set to its default {DEFAULT_GEM_P}")
        classifier = out.get("classifier.weight")
        return Converted(out, None if classifier is None else int(classifier.shape[0]), notes)


CONVERTERS.register("fastreid")(FastReIDConverter())
