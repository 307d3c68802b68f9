"""A CLIP image encoder used as a semantic feature extractor on Re-ID images: the same augmented, Re-ID-normalised
batch that feeds the appearance branch is re-normalised to CLIP's statistics inside the module."""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vreid.models.backbones.registry import create_backbone

#: CLIP's (OpenAI's) image statistics, shared by open_clip's OpenAI, LAION and TinyCLIP checkpoints.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipSemanticEncoder(nn.Module):
    """Image -> CLIP image embedding (the class token after CLIP's visual projection), shape (B, embed_dim).

    Parameters
    ----------
    model_name: an open_clip model name (``ViT-B-32``, ``ViT-B-32-quickgelu`` for OpenAI files), or any name
        for a tower given as `clip_config` (open_clip's JSON schema; used by this encoder only, registered nowhere).
    pretrained: a local open_clip or OpenAI checkpoint (whole model or image tower); None = random weights.
    input_mean, input_std: the normalisation the incoming images carry (the Re-ID pipeline's).
    input_size: resize to (h, w) before CLIP; None keeps the Re-ID size and the position table is interpolated
        to the new patch grid (the CLIP backbone does this on the fly; the class-token position is kept as is).
    """

    def __init__(self, model_name: str = "ViT-B-32", pretrained: str | None = None,
                 input_mean: Sequence[float] = (0.485, 0.456, 0.406),
                 input_std: Sequence[float] = (0.229, 0.224, 0.225),
                 clip_mean: Sequence[float] = CLIP_MEAN, clip_std: Sequence[float] = CLIP_STD,
                 input_size: Sequence[int] | None = None, quick_gelu: bool | None = None,
                 clip_config: dict[str, Any] | None = None) -> None:
        super().__init__()
        options: dict[str, Any] = {} if quick_gelu is None else {"quick_gelu": quick_gelu}
        if clip_config is not None:
            options["config"] = clip_config
        self.encoder = create_backbone(f"clip:{model_name}", pretrained=pretrained, project=True, **options)
        if self.encoder.kind != "vit":
            raise ValueError(f"clip:{model_name}: the semantic module expects a ViT tower")
        self.num_features = int(self.encoder.num_features)
        self.input_size = tuple(input_size) if input_size else None
        # x_clip = (x * s_in + m_in - m_clip) / s_clip, folded into one affine map per channel.
        s_in, m_in = torch.tensor(input_std), torch.tensor(input_mean)
        s_c, m_c = torch.tensor(clip_std), torch.tensor(clip_mean)
        self.register_buffer("scale", (s_in / s_c).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((m_in - m_c) / s_c).view(1, 3, 1, 1), persistent=False)

    @property
    def pretrained_report(self):
        return self.encoder.pretrained_report

    def to_clip_input(self, images: torch.Tensor) -> torch.Tensor:
        x = images * self.scale.to(images.dtype) + self.shift.to(images.dtype)
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder.forward_features(self.to_clip_input(images))[:, 0]
