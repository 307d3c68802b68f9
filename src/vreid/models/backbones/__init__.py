"""Backbones: ResNet/IBN-a written here, any timm model (``timm:<name>``), CLIP image encoders (``clip:<name>``)."""
from vreid.models.backbones import open_clip_models, resnet, timm_models  # noqa: F401  (fill the registries)
from vreid.models.backbones.config import BackboneConfig, build_backbone
from vreid.models.backbones.registry import BACKBONE_FAMILIES, BACKBONES, create_backbone

__all__ = ["BACKBONES", "BACKBONE_FAMILIES", "BackboneConfig", "build_backbone", "create_backbone"]
