"""Official MUSP (sangrokleeeeee/MUSP, torchreid-style) checkpoints -> vreid `musp`.

The file is torchreid's `save_checkpoint`: a dict whose `state_dict` holds the model's tensors (a `module.` prefix
from DataParallel is dropped when the file is read). The trunk is torchvision's ResNet-50 at the top level
(`conv1`, `bn1`, `layer1..4`, layer3 stride 2 and layer4 stride 1: vreid's resnet50 with last stride 1); the head:

    key.{weight,bias}        -> head.key.*           (3x3 conv to the P attention logits)
    value.{weight,bias}      -> head.value.*         (depthwise 3x3 conv)
    c_.fc.{0,2}.weight       -> head.se.fc.{0,2}.weight   (the joint channel gate, --channel)
    neck.i.*                 -> necks.i.bn.*         (BatchNorm1d per kept part, then the global feature)
    classifier.i.weight      -> classifier.i.weight

Preprocessing: MUSP normalises with mean = std = 0.5 per channel (its transforms.py), not ImageNet statistics.
Not mapped: the baseline (`--attn` off) and vertical-stripe models, which have no soft partition head.
"""
from __future__ import annotations

import re

import torch

from vreid.convert.base import CONVERTERS, Converted, ConversionError, Preprocessing, renamed
from vreid.methods import MethodConfig

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_RENAMES = (
    (re.compile(r"((?:conv1|bn1|layer[1-4]\.\d+)\..+)"), lambda m: f"backbone.{m[1]}"),
    (re.compile(r"(key|value)\.(weight|bias)"), lambda m: f"head.{m[1]}.{m[2]}"),
    (re.compile(r"c_\.fc\.([02])\.weight"), lambda m: f"head.se.fc.{m[1]}.weight"),
    (re.compile(rf"neck\.(\d+)\.{_BN}"), lambda m: f"necks.{m[1]}.bn.{m[2]}"),
    (re.compile(r"classifier\.(\d+)\.weight"), lambda m: f"classifier.{m[1]}.weight"),
)
#: MUSP's Normalize(mean=[0.5] * 3, std=[0.5] * 3)
MUSP_MEAN = MUSP_STD = (0.5, 0.5, 0.5)


def vreid_key(key: str) -> str | None:
    """The vreid `musp` name of an official MUSP key, or None when vreid's layout has no place for it."""
    return renamed(key, _RENAMES)


class MuspConverter:
    """Official ResNet-50 + soft partition head (`--attn`) -> vreid `musp`."""

    methods = ("musp",)

    def implied_settings(self, state_dict: dict[str, torch.Tensor]) -> dict[str, object]:
        settings: dict[str, object] = {"model.name": "musp", "model.backbone.name": "resnet50",
                                       "model.channel_gate": "c_.fc.0.weight" in state_dict}
        key = state_dict.get("key.weight")
        if key is not None:
            settings["model.num_maps"] = int(key.shape[0])
        return settings

    def preprocessing(self, state_dict: dict[str, torch.Tensor]) -> Preprocessing:
        return Preprocessing(MUSP_MEAN, MUSP_STD, "MUSP's transforms (Normalize mean = std = 0.5)")

    def convert(self, state_dict: dict[str, torch.Tensor], cfg: MethodConfig) -> Converted:
        if cfg.name not in self.methods:
            raise ConversionError(f"an official MUSP checkpoint fills vreid's musp method, not model.name={cfg.name}; "
                                  "use configs/musp/*.yaml")
        if "key.weight" not in state_dict:
            raise ConversionError("no `key.weight` in the checkpoint: it is not a MUSP soft partition model "
                                  "(--attn); the baseline and vertical-stripe models have no vreid counterpart")
        out: dict[str, torch.Tensor] = {}
        unplaced = []
        for key, value in state_dict.items():
            name = vreid_key(key)
            if name is None:
                unplaced.append(key)
            else:
                out[name] = value
        if unplaced:
            raise ConversionError(f"{len(unplaced)} MUSP tensors have no place in vreid's musp: "
                                  f"{', '.join(unplaced[:10])}" + (" ..." if len(unplaced) > 10 else "")
                                  + "; supported is the official ResNet-50 with the soft partition head")
        notes = ["MUSP pools parts as (sum over pixels) / h * w; vreid sums over pixels: equal for square maps "
                 "(256x256 input), for other sizes set data.height = data.width"]
        classifier = out.get("classifier.0.weight")
        return Converted(out, None if classifier is None else int(classifier.shape[0]), notes)


CONVERTERS.register("musp")(MuspConverter())
