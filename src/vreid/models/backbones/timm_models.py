"""Any timm model as a backbone: ``timm:<model_name>``, built headless with ``pretrained=False``."""
from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

from vreid.models.backbones.registry import BACKBONE_FAMILIES


def set_last_stride(layer4: nn.Module) -> None:
    """Make the first block of a ResNet-style ``layer4`` keep resolution (Re-ID's last stride 1)."""
    first = layer4[0] if isinstance(layer4, nn.Sequential) else layer4
    for m in first.modules():
        if isinstance(m, nn.Conv2d) and m.stride == (2, 2):
            m.stride = (1, 1)
        elif isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)) and m.stride in (2, (2, 2)):
            m.kernel_size, m.stride, m.padding = 1, 1, 0  # a strided pool in a 'd'-style shortcut


def last_strided_stage(model: nn.Module) -> nn.Module | None:
    """The last stage that halves resolution: ``layer4`` of ResNet-style models, else the last stage of
    ``blocks`` (EfficientNet / MobileNet style) whose first block has a stride-2 convolution; None if neither."""
    if hasattr(model, "layer4"):
        return model.layer4
    stages = getattr(model, "blocks", None)
    if not isinstance(stages, nn.Sequential):
        return None
    strided = [stage for stage in stages
               if any(isinstance(m, nn.Conv2d) and m.stride == (2, 2) for m in (stage[0] if isinstance(
                   stage, nn.Sequential) else stage).modules())]
    return strided[-1] if strided else None


class TimmBackbone(nn.Module):
    """Wraps ``timm.create_model(name, pretrained=False, num_classes=0, global_pool='')``.

    ``forward_features`` gives (B, C, h, w) for CNNs (NHWC models such as Swin are permuted to NCHW) and
    (B, N, C) for token models with the class token first; a token model without a class token gets the mean
    token prepended, so token 0 is always a global summary. ``last_stride: 1`` keeps the resolution of the last
    strided stage (``layer4`` of ResNets; the last stride-2 stage of EfficientNet / MobileNet ``blocks``).
    """

    def __init__(self, model_name: str, last_stride: int = 1, **kwargs: Any) -> None:
        super().__init__()
        import timm

        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        self.model_name = model_name
        self.model = timm.create_model(model_name, pretrained=False, num_classes=0, global_pool="", **kwargs)
        self.num_features = int(self.model.num_features)
        self._nhwc = getattr(self.model, "output_fmt", "NCHW") == "NHWC"
        prefix = getattr(self.model, "num_prefix_tokens", None)
        self.feature_layout = "tokens" if prefix is not None and not self._nhwc else "map"
        self._prepend_mean = self.feature_layout == "tokens" and prefix == 0
        stage = last_strided_stage(self.model) if last_stride == 1 else None
        if stage is not None:
            set_last_stride(stage)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model.forward_features(x)
        if self._nhwc:
            out = out.permute(0, 3, 1, 2)
        if self._prepend_mean:
            out = torch.cat([out.mean(dim=1, keepdim=True), out], dim=1)
        expected = 3 if self.feature_layout == "tokens" else 4
        if out.ndim != expected:
            raise RuntimeError(f"timm:{self.model_name} returned shape {tuple(out.shape)}, expected "
                               f"{expected} dims for layout '{self.feature_layout}'")
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    def filter_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Plain timm checkpoints: run timm's own converter for this architecture (resizes position embeddings,
        maps original-repo key names), then prefix ``model.``."""
        if any(k.startswith("model.") for k in state_dict):
            return state_dict
        module = sys.modules.get(type(self.model).__module__)
        convert = getattr(module, "checkpoint_filter_fn", None)
        if convert is not None:
            try:
                state_dict = convert(state_dict, self.model)
            except Exception:  # noqa: BLE001 - a checkpoint timm's converter does not know: match keys as they are
                pass
        return {f"model.{k}": v for k, v in state_dict.items()}


@BACKBONE_FAMILIES.register("timm")
def timm_backbone(model_name: str, last_stride: int = 1, **kwargs: Any) -> TimmBackbone:
    return TimmBackbone(model_name, last_stride=last_stride, **kwargs)
