"""CLIP image encoders through open_clip: ``clip:<open_clip model name>``, built without weights.

``forward_features`` returns tokens (B, N, C) with the global token first:
- ViT towers: [CLS, patches] after ``ln_post``, projected by ``proj`` to the joint embedding (C = embed_dim) when
  ``project=True`` (default), else C = width. Token 0 equals the tower's own pooled output.
- ModifiedResNet towers (RN50, ...): the attention pool's outputs for [mean, positions] (C = embed_dim); token 0 is
  CLIP's image embedding. ``last_stride`` (default 1, as for every ResNet here) applies to layer4.
Position embeddings are interpolated on the fly when the input grid differs from the pretraining one, so
non-square Re-ID crops (256x128) work and pretrained files load at their native shapes.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vreid.models.backbones.registry import BACKBONE_FAMILIES
from vreid.models.backbones.timm_models import set_last_stride
from vreid.registry import Registry, RegistryError

#: Extra open_clip model configs known to vreid (tiny ones for tests and CPU demos), same schema as open_clip's JSON.
CLIP_CONFIGS: Registry[dict[str, Any]] = Registry("clip config")

_TINY_TEXT = {"context_length": 16, "vocab_size": 128, "width": 32, "heads": 2, "layers": 1}
CLIP_CONFIGS.register("vreid-tiny-vit")(
    {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
     "text_cfg": _TINY_TEXT})
CLIP_CONFIGS.register("vreid-tiny-rn")(
    {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 64,
                                     "patch_size": None},
     "text_cfg": _TINY_TEXT})


def clip_model_config(model_name: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The open_clip config dict for `model_name`: `config` when given (a caller's own tower, known to nobody
    else), else vreid's tiny configs, then open_clip's bundled JSONs."""
    if config is not None:
        return _checked_own_config(model_name, config)
    if model_name in CLIP_CONFIGS:
        return copy.deepcopy(CLIP_CONFIGS.get(model_name))
    import open_clip

    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise RegistryError(f"unknown CLIP model '{model_name}'; available: "
                            f"{', '.join(CLIP_CONFIGS.names() + open_clip.list_models())}")
    return copy.deepcopy(cfg)


def _checked_own_config(model_name: str, config: dict[str, Any]) -> dict[str, Any]:
    """A copy of a caller's open_clip config with the fields the builders need; a missing text tower gets a stub."""
    config = copy.deepcopy(dict(config))
    if "vision_cfg" not in config or "embed_dim" not in config:
        raise ValueError(f"CLIP config {model_name!r} needs 'embed_dim' and 'vision_cfg' (open_clip's JSON schema)")
    config.setdefault("text_cfg", dict(_TINY_TEXT))  # only the image tower is built
    return config


def build_tiny_clip(model_name: str = "vreid-tiny-vit") -> nn.Module:
    """A full open_clip ``CLIP`` (image and text towers) from a vreid config, for tests that need whole-model files."""
    from open_clip.model import CLIP

    cfg = clip_model_config(model_name)
    return CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"], quick_gelu=cfg.get("quick_gelu", False))


def _build_vision_tower(cfg: dict[str, Any], quick_gelu: bool) -> nn.Module:
    try:
        from open_clip.model import _build_vision_tower as build
    except ImportError:  # older/newer open_clip without the helper: build the whole model, keep its image tower
        from open_clip.model import CLIP

        return CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"], quick_gelu=quick_gelu).visual
    return build(cfg["embed_dim"], cfg["vision_cfg"], quick_gelu=quick_gelu)


def _resize_grid(pos: torch.Tensor, old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """(1 + old_h*old_w, C) position table -> (1 + new_h*new_w, C), bicubic on the grid part."""
    if tuple(old) == tuple(new):
        return pos
    grid = pos[1:].reshape(1, old[0], old[1], -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=new, mode="bicubic", align_corners=False).to(pos.dtype)
    return torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(new[0] * new[1], -1)], dim=0)


class ClipVisualBackbone(nn.Module):
    """The image tower of an open_clip model (kept as ``self.visual``, so ``visual.*`` checkpoint keys match)."""

    feature_layout = "tokens"

    def __init__(self, model_name: str, last_stride: int = 1, project: bool = True,
                 quick_gelu: bool | None = None, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        from open_clip.modified_resnet import ModifiedResNet
        from open_clip.transformer import VisionTransformer

        cfg = clip_model_config(model_name, config)
        quick_gelu = cfg.get("quick_gelu", False) if quick_gelu is None else quick_gelu
        self.model_name = model_name
        self.visual = _build_vision_tower(cfg, quick_gelu)
        self.project = project
        if isinstance(self.visual, VisionTransformer):
            if self.visual.attn_pool is not None:
                raise ValueError(f"clip:{model_name}: attentional-pool towers are not supported")
            self.kind = "vit"
            self.num_features = int(self.visual.output_dim if project else self.visual.positional_embedding.shape[1])
        elif isinstance(self.visual, ModifiedResNet):
            self.kind = "resnet"
            self.num_features = int(self.visual.output_dim)
            if last_stride == 1:
                set_last_stride(self.visual.layer4)
        else:
            raise ValueError(f"clip:{model_name}: only open_clip ViT and ModifiedResNet towers are supported, "
                             f"got {type(self.visual).__name__}")

    def _vit_tokens(self, x: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = v.conv1(x)
        grid = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)
        x = x + _resize_grid(v.positional_embedding, v.grid_size, grid).to(x.dtype)
        x = v.ln_pre(v.patch_dropout(x))
        x = v.ln_post(v.transformer(x))
        if self.project and v.proj is not None:
            x = x @ v.proj
        return x

    def _resnet_tokens(self, x: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(x)))))
        pool = v.attnpool
        b, c, h, w = x.shape
        x = x.flatten(2).permute(2, 0, 1)  # (HW, B, C)
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
        side = int(math.isqrt(pool.positional_embedding.shape[0] - 1))
        x = x + _resize_grid(pool.positional_embedding, (side, side), (h, w))[:, None, :].to(x.dtype)
        # Same attention as open_clip's AttentionPool2d, keeping every query's output instead of only the first.
        x, _ = F.multi_head_attention_forward(
            query=x, key=x, value=x, embed_dim_to_check=c, num_heads=pool.num_heads,
            q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
            in_proj_weight=None, in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
            out_proj_weight=pool.c_proj.weight, out_proj_bias=pool.c_proj.bias,
            use_separate_proj_weight=True, training=self.training, need_weights=False,
        )
        return x.permute(1, 0, 2)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._vit_tokens(x) if self.kind == "vit" else self._resnet_tokens(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    def filter_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Whole CLIP files (open_clip or OpenAI naming, which agree on the image tower): keep ``visual.*`` only.
        Image-tower-only files (no ``visual.`` prefix) get the prefix added."""
        if any(k.startswith("visual.") for k in state_dict):
            return {k: v for k, v in state_dict.items() if k.startswith("visual.")}
        return {f"visual.{k}": v for k, v in state_dict.items()}


@BACKBONE_FAMILIES.register("clip")
def clip_backbone(model_name: str, last_stride: int = 1, **kwargs: Any) -> ClipVisualBackbone:
    return ClipVisualBackbone(model_name, last_stride=last_stride, **kwargs)
