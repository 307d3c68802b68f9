"""Official HRCN (iCVTEAM/HRCN, a FastReID fork) checkpoints -> vreid `hrcn`.

The file is FastReID's: a `model` dict with `backbone.*` (torchvision ResNet names, IBN-a `bn1.IN` / `bn1.BN`, the
stem max-pool padded as vreid's default), `heads.*` of `HRCNHead`, and `pixel_mean` / `pixel_std` buffers that become
the run's preprocessing (divided by 255, as for FastReID). Head keys map as follows (s = cross-level stage 0..2,
g = graph 0..3 where 3 is the regional graph, l = graph convolution 1..2):

    align_multilevel_layers.s.k.{0,1}  -> cross.stages.s.nodes.k.{conv,map_norm}   multilevel_bns.s.k -> ...norm
    align_lower_layers.i.{0,1}         -> cross.stages.(i+1).lower.{linear,norm}   (1x1 conv -> linear)
    align_part_layers.k.{0,1}          -> regional.parts.k.{conv,map_norm}         part_bns.k -> ...norm
    align_high_layer.{0,1}             -> regional.align_high.{0,1}                (only when widths differ)
    gcn_weight_l.g / gcn_bias_l.g      -> <graph g>.layers.(l-1).linear.{weight (transposed), bias}
    gcn_bn_l.g                         -> <graph g>.layers.(l-1).node_norm
    feat_layers.j.{0,1}                -> feature_layers.j.{linear,norm}           (1x1 conv -> linear)
    last_bn                            -> neck.bn          global_classifier.weight -> classifier.weight

Not mapped: non-square graph weights with their `gcn_downsample_*` layers (GCN_CHANNELS that differ), the
LAST_FC_LAYER option, and checkpoints with a branch removed; each is an error that names the tensors.
"""
from __future__ import annotations

import re

import torch

from vreid.convert.base import CONVERTERS, Converted, ConversionError, renamed
from vreid.convert.fastreid import FastReIDConverter
from vreid.methods import MethodConfig

#: official graph index -> the vreid module that holds it
_GRAPHS = {"0": "cross.stages.0.graph", "1": "cross.stages.1.graph", "2": "cross.stages.2.graph",
           "3": "regional.graph"}
_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_RENAMES = (
    (re.compile(r"backbone\.((?:conv1|bn1|layer[1-4]\.\d+)\..+)"), lambda m: f"backbone.{m[1]}"),
    (re.compile(r"heads\.align_multilevel_layers\.(\d+)\.(\d+)\.0\.(weight|bias)"),
     lambda m: f"cross.stages.{m[1]}.nodes.{m[2]}.conv.{m[3]}"),
    (re.compile(rf"heads\.align_multilevel_layers\.(\d+)\.(\d+)\.1\.{_BN}"),
     lambda m: f"cross.stages.{m[1]}.nodes.{m[2]}.map_norm.{m[3]}"),
    (re.compile(rf"heads\.multilevel_bns\.(\d+)\.(\d+)\.{_BN}"),
     lambda m: f"cross.stages.{m[1]}.nodes.{m[2]}.norm.{m[3]}"),
    (re.compile(r"heads\.align_lower_layers\.(\d+)\.0\.(weight|bias)"),
     lambda m: f"cross.stages.{int(m[1]) + 1}.lower.linear.{m[2]}"),
    (re.compile(rf"heads\.align_lower_layers\.(\d+)\.1\.{_BN}"),
     lambda m: f"cross.stages.{int(m[1]) + 1}.lower.norm.{m[2]}"),
    (re.compile(r"heads\.align_part_layers\.(\d+)\.0\.(weight|bias)"), lambda m: f"regional.parts.{m[1]}.conv.{m[2]}"),
    (re.compile(rf"heads\.align_part_layers\.(\d+)\.1\.{_BN}"), lambda m: f"regional.parts.{m[1]}.map_norm.{m[2]}"),
    (re.compile(rf"heads\.part_bns\.(\d+)\.{_BN}"), lambda m: f"regional.parts.{m[1]}.norm.{m[2]}"),
    (re.compile(r"heads\.align_high_layer\.([01])\.(.+)"), lambda m: f"regional.align_high.{m[1]}.{m[2]}"),
    (re.compile(r"heads\.gcn_weight_([12])\.([0-3])"),
     lambda m: f"{_GRAPHS[m[2]]}.layers.{int(m[1]) - 1}.linear.weight"),
    (re.compile(r"heads\.gcn_bias_([12])\.([0-3])"), lambda m: f"{_GRAPHS[m[2]]}.layers.{int(m[1]) - 1}.linear.bias"),
    (re.compile(rf"heads\.gcn_bn_([12])\.([0-3])\.{_BN}"),
     lambda m: f"{_GRAPHS[m[2]]}.layers.{int(m[1]) - 1}.node_norm.{m[3]}"),
    (re.compile(r"heads\.feat_layers\.(\d+)\.0\.(weight|bias)"), lambda m: f"feature_layers.{m[1]}.linear.{m[2]}"),
    (re.compile(rf"heads\.feat_layers\.(\d+)\.1\.{_BN}"), lambda m: f"feature_layers.{m[1]}.norm.{m[2]}"),
    (re.compile(rf"heads\.last_bn\.{_BN}"), lambda m: f"neck.bn.{m[1]}"),
    (re.compile(r"heads\.global_classifier\.weight"), lambda m: "classifier.weight"),
)
_PREPROCESSING_KEYS = ("pixel_mean", "pixel_std")
_GRAPH_WEIGHT = re.compile(r"heads\.gcn_weight_[12]\.\d+")
_ONE_BY_ONE = re.compile(r"heads\.(align_lower_layers|feat_layers)\.\d+\.0\.weight")


def vreid_key(key: str) -> str | None:
    """The vreid `hrcn` name of an official HRCN key, or None when vreid's layout has no place for it."""
    return renamed(key, _RENAMES)


def vreid_tensor(key: str, value: torch.Tensor) -> torch.Tensor:
    """Graph weights are stored (in, out) officially, (out, in) in nn.Linear; 1x1 convs on 1x1 maps become linear."""
    if _GRAPH_WEIGHT.fullmatch(key):
        return value.t().contiguous()
    if _ONE_BY_ONE.fullmatch(key):
        return value.flatten(1)
    return value


class HrcnConverter(FastReIDConverter):
    """Official `Baseline` + `HRCNHead` -> vreid `hrcn` with both branches; preprocessing as FastReID's."""

    methods = ("hrcn",)

    def implied_settings(self, state_dict: dict[str, torch.Tensor]) -> dict[str, object]:
        trunk = super().implied_settings(state_dict)["model.backbone.name"]
        settings: dict[str, object] = {"model.name": "hrcn", "model.backbone.name": trunk,
                                       "model.cross_level": True, "model.regional": True}
        widths = [state_dict.get(f"heads.multilevel_bns.{s}.0.weight") for s in range(3)]
        if all(w is not None for w in widths):
            settings["model.stage_widths"] = [int(w.shape[0]) for w in widths]
        parts = sum(1 for k in state_dict if re.fullmatch(r"heads\.part_bns\.\d+\.weight", k))
        if parts:
            settings["model.regional_parts"] = parts - 1
            settings["model.regional_width"] = int(state_dict["heads.part_bns.0.weight"].shape[0])
        return settings

    def convert(self, state_dict: dict[str, torch.Tensor], cfg: MethodConfig) -> Converted:
        if cfg.name not in self.methods:
            raise ConversionError(f"an official HRCN checkpoint fills vreid's hrcn method, not model.name={cfg.name}; "
                                  "use configs/hrcn/*.yaml")
        if not (getattr(cfg, "cross_level", False) and getattr(cfg, "regional", False)):
            raise ConversionError("the official HRCN model has both branches; set model.cross_level=true and "
                                  "model.regional=true")
        out: dict[str, torch.Tensor] = {}
        unplaced = []
        for key, value in state_dict.items():
            if key in _PREPROCESSING_KEYS:
                continue
            name = vreid_key(key)
            if name is None:
                unplaced.append(key)
            else:
                out[name] = vreid_tensor(key, value)
        if unplaced:
            raise ConversionError(
                f"{len(unplaced)} HRCN tensors have no place in vreid's hrcn: {', '.join(unplaced[:10])}"
                + (" ..." if len(unplaced) > 10 else "") + "; supported is the official HRCNHead with square graph "
                "weights (equal GCN_CHANNELS) and LAST_FC_LAYER off (see docs/models.md)")
        notes = ["HRCN resizes test images bicubically, vreid bilinearly, so numbers on real images may move slightly"]
        classifier = out.get("classifier.weight")
        return Converted(out, None if classifier is None else int(classifier.shape[0]), notes)


CONVERTERS.register("hrcn")(HrcnConverter())
