"""ResNet / ResNeXt / SE-ResNet with optional IBN-a, with torchvision's module names so public weights load.

IBN-a (Pan et al., "Two at once", ECCV 2018): in layer1..layer3 the first norm of every block normalises the first
half of its channels with InstanceNorm (affine) and the rest with BatchNorm; layer4 is plain. The split norm's
children are named ``IN`` and ``BN`` as in the official IBN-Net checkpoints, so those files load key for key.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from vreid.models.backbones.registry import BACKBONES


class IBN(nn.Module):
    """Half InstanceNorm (first ``ratio`` of the channels), half BatchNorm."""

    def __init__(self, planes: int, ratio: float = 0.5) -> None:
        super().__init__()
        self.half = int(planes * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.IN(a.contiguous()), self.BN(b.contiguous())], dim=1)


class SqueezeExcite(nn.Module):
    """Channel attention of SE-Net: global average -> bottleneck MLP -> sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction, bias=False), nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels, bias=False), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc(x.mean(dim=(2, 3)))
        return x * gate[:, :, None, None]


def _norm1(planes: int, ibn: bool) -> nn.Module:
    return IBN(planes) if ibn else nn.BatchNorm2d(planes)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 ibn: bool = False, se: bool = False, groups: int = 1, base_width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = _norm1(planes, ibn)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = SqueezeExcite(planes) if se else None
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's v1.5 bottleneck (stride on the 3x3 conv); ResNeXt through ``groups`` and ``base_width``."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 ibn: bool = False, se: bool = False, groups: int = 1, base_width: int = 64) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = _norm1(width, ibn)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.se = SqueezeExcite(planes * self.expansion) if se else None
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


#: The stem's 3x3 stride-2 max-pool: "padded" as torchvision and IBN-Net (padding 1), "ceil" as FastReID v1
#: (no padding, ceil_mode): the same output size, windows one pixel apart.
STEM_POOLS = {
    "padded": lambda: nn.MaxPool2d(3, 2, 1),
    "ceil": lambda: nn.MaxPool2d(3, 2, ceil_mode=True),
}


class ResNet(nn.Module):
    """Headless ResNet: ``forward_features`` returns the layer4 map (B, num_features, H/16 or H/32, ...).

    Stages are plain attributes (``conv1, bn1, relu, maxpool, layer1..layer4``) so methods can copy or regroup them.
    ``forward_intermediates`` also returns the output of every residual block of the stages asked for;
    ``stage_channels`` and ``stage_reductions`` give each stage's output width and stride (layer1..layer4).
    """

    feature_layout = "map"

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int],
                 widths: Sequence[int] = (64, 128, 256, 512), stem_width: int | None = None,
                 last_stride: int = 1, ibn: bool = False, se: bool = False,
                 groups: int = 1, base_width: int = 64, stem_pool: str = "padded") -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        if stem_pool not in STEM_POOLS:
            raise ValueError(f"model.backbone.options.stem_pool: {stem_pool!r} is not one of {', '.join(STEM_POOLS)}")
        stem_width = stem_width or widths[0]
        self._block_kw = dict(se=se, groups=groups, base_width=base_width)
        self.inplanes = stem_width
        self.conv1 = nn.Conv2d(3, stem_width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = STEM_POOLS[stem_pool]()
        strides = (1, 2, 2, last_stride)
        for i, (planes, n, stride) in enumerate(zip(widths, layers, strides)):
            # IBN-a: every block of layer1..layer3; layer4 stays BatchNorm only.
            setattr(self, f"layer{i + 1}", self._make_layer(block, planes, n, stride, ibn=ibn and i < 3))
        self.num_features = widths[3] * block.expansion
        self.last_stride = last_stride
        self.stage_channels: tuple[int, ...] = tuple(w * block.expansion for w in widths)
        self.stage_reductions: tuple[int, ...] = (4, 8, 16, 16 * last_stride)
        self._init_weights()

    def _make_layer(self, block, planes: int, blocks: int, stride: int, ibn: bool) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, ibn=ibn, **self._block_kw)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, ibn=ibn, **self._block_kw) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def stages(self) -> list[nn.Module]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_intermediates(self, x: torch.Tensor, stages: Sequence[int] = (1, 2, 3, 4),
                              ) -> tuple[torch.Tensor, dict[int, list[torch.Tensor]]]:
        """(final layer4 map, {stage: [output of each residual block of that stage, in order]}).

        Stages are numbered 1..4 (``layer1..layer4``). Block ``i`` of stage ``s`` gives a map of
        ``stage_channels[s - 1]`` channels at ``1 / stage_reductions[s - 1]`` of the input (rounded up), so
        ``taps[s][-1]`` is the stage's output and ``final`` equals ``forward_features(x)``. In a stage wrapped with
        non-local blocks (``NonLocalStage``) a tap is the residual block's own output, before the non-local block
        that may follow it; the next block, the next stage and ``final`` still see the non-local output, as in
        ``forward_features``.
        """
        wanted = sorted(set(stages))
        if any(s not in (1, 2, 3, 4) for s in wanted):
            raise ValueError(f"forward_intermediates: stages are numbered 1..4 (layer1..layer4), got {list(stages)}")
        taps: dict[int, list[torch.Tensor]] = {s: [] for s in wanted}
        handles = [self.stages[s - 1][i].register_forward_hook(lambda _m, _in, out, s=s: taps[s].append(out))
                   for s in wanted for i in range(len(self.stages[s - 1]))]
        try:
            final = self.forward_features(x)
        finally:
            for handle in handles:
                handle.remove()
        return final, taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


def _resnet(block, layers, **defaults):
    """A builder for one registered variant; keyword options override the variant's defaults."""

    def build(last_stride: int = 1, **kwargs) -> ResNet:
        return ResNet(block, layers, last_stride=last_stride, **{**defaults, **kwargs})

    return build


_VARIANTS = {
    # name: (block, layers, defaults); keyword options given to create_backbone override the defaults
    "resnet_tiny_ibn_a": (BasicBlock, [1, 1, 1, 1], dict(widths=(32, 64, 128, 256), ibn=True)),
    "resnet18": (BasicBlock, [2, 2, 2, 2], {}),
    "resnet18_ibn_a": (BasicBlock, [2, 2, 2, 2], dict(ibn=True)),
    "resnet34": (BasicBlock, [3, 4, 6, 3], {}),
    "resnet34_ibn_a": (BasicBlock, [3, 4, 6, 3], dict(ibn=True)),
    "resnet50": (Bottleneck, [3, 4, 6, 3], {}),
    "resnet50_ibn_a": (Bottleneck, [3, 4, 6, 3], dict(ibn=True)),
    "resnet101": (Bottleneck, [3, 4, 23, 3], {}),
    "resnet101_ibn_a": (Bottleneck, [3, 4, 23, 3], dict(ibn=True)),
    "se_resnet101_ibn_a": (Bottleneck, [3, 4, 23, 3], dict(ibn=True, se=True)),
    # IBN-Net's official resnext101_ibn_a is 32x4d; 32x8d is torchvision's resnext101_32x8d.
    "resnext101_ibn_a": (Bottleneck, [3, 4, 23, 3], dict(ibn=True, groups=32, base_width=4)),
    "resnext101_32x8d": (Bottleneck, [3, 4, 23, 3], dict(groups=32, base_width=8)),
    "resnext101_32x8d_ibn_a": (Bottleneck, [3, 4, 23, 3], dict(ibn=True, groups=32, base_width=8)),
}

_SMALL = {"resnet_tiny_ibn_a", "resnet18", "resnet18_ibn_a"}

for _name, (_block, _layers, _defaults) in _VARIANTS.items():
    BACKBONES.register(_name, family="resnet", small=_name in _SMALL)(_resnet(_block, _layers, **_defaults))
