"""Models: backbones (ResNet/IBN-a, timm, CLIP), reusable layers (pooling, BNNeck, classifiers), weight loading."""
from vreid.models.backbones import BACKBONE_FAMILIES, BACKBONES, create_backbone
from vreid.models.weights import LoadReport, WeightsError, load_pretrained, read_state_dict

__all__ = ["BACKBONES", "BACKBONE_FAMILIES", "create_backbone", "load_pretrained", "read_state_dict",
           "LoadReport", "WeightsError"]
