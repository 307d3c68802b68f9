"""`sbs`: FastReID's stronger baseline, the trunk MoReID builds on: `bot` plus non-local blocks in the ResNet-IBN
trunk, GeM pooling with a learnable p, a margin cosine classifier (CircleSoftmax by default; CosFace/ArcFace by
name), and the backbone frozen for the first iterations.

The rest of the recipe lives in the config: SGD Nesterov, linear warmup then a flat stretch then cosine
(`schedule: warmup_cosine` with `delay_epochs`), AutoAugment with a probability (`data.transforms.autoaugment_prob`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from vreid.config.loader import choices
from vreid.engine.freeze import FreezeModules
from vreid.engine.hooks import Hook
from vreid.methods.base import METHODS, DataInfo
from vreid.methods.bot import BagOfTricks, BotConfig, _classifiers, _pools
from vreid.models.nonlocal_block import insert_non_local


@dataclass
class SbsConfig(BotConfig):
    name: str = "sbs"
    pooling: str = field(default="gem", metadata=choices(registry=_pools))
    classifier: str = field(default="circle", metadata=choices(registry=_classifiers))
    classifier_scale: float = 64.0
    classifier_margin: float = 0.35
    #: non-local blocks after the last n residual blocks of layer1..layer4 (ResNet-50 layout of SBS)
    non_local: list[int] = field(default_factory=lambda: [0, 2, 3, 0])
    #: inner channels of every non-local block: 1 as FastReID's Non_local (reduc_ratio // reduc_ratio) ...
    non_local_inner_channels: int = 1
    #: ... unless a reduction is set: channels // reduction (2 = Wang et al.'s non-local block)
    non_local_reduction: int | None = None
    #: optimizer steps during which the backbone is frozen (0 = never); the heads and GeM's p still train
    freeze_backbone_steps: int = 0

    def validate(self) -> None:
        if len(self.non_local) != 4 or any(n < 0 for n in self.non_local):
            raise ValueError("non_local needs four counts >= 0, one per ResNet stage (layer1..layer4)")
        if self.non_local_inner_channels < 1 or (self.non_local_reduction is not None and self.non_local_reduction < 1):
            raise ValueError("non_local_inner_channels and non_local_reduction must be >= 1")
        if self.freeze_backbone_steps < 0:
            raise ValueError("freeze_backbone_steps must be >= 0")


@METHODS.register("sbs")
class StrongerBaseline(BagOfTricks):
    Config = SbsConfig

    def __init__(self, cfg: SbsConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        if any(cfg.non_local):
            try:
                insert_non_local(self.backbone, cfg.non_local, cfg.non_local_inner_channels, cfg.non_local_reduction)
            except ValueError as e:
                raise ValueError(f"model.non_local: {str(e).removeprefix('non_local: ')}") from None
        # frozen parameters get no gradient for a while: DDP must not wait for them
        self.find_unused_parameters = cfg.freeze_backbone_steps > 0

    def hooks(self) -> list[Hook]:
        hooks = super().hooks()
        if self.cfg.freeze_backbone_steps > 0:
            hooks.append(FreezeModules(self, ["backbone"], steps=self.cfg.freeze_backbone_steps))
        return hooks
