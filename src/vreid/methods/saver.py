"""`saver`: SAVER (Khorramshahi, Peri et al., ECCV 2020), self-supervised attention from a VAE residual.

A frozen convolutional VAE (trained first, as the run's own `vae` stage: vreid.engine.stages) coarsely
reconstructs each image; the residual R = X - VAE(X), min-max normalised per image and channel, holds the
vehicle-specific details. The Re-ID input is the convex combination X' = (1 - w) X + w R (w: `residual_weight`,
in [0, 1], learned as sigmoid of a scalar by default; the paper's alpha is 1 - w), fed to the `bot` baseline
(its trunk, pooling, BNNeck, classifier and losses, reused from vreid.methods.bot). With w = 0 and not learned
the VAE is not built and the method is `bot` exactly. The VAE is needed at test time too.

`residual_use: excite` is the same group's EVER variant (AIC 2020), not SAVER: the image goes in unmixed, and
during training only the residual's intensity map (channel mean, resized) excites the maps after the chosen
trunk stages additively, f + alpha(t) * intensity * mean_c(f), with alpha(t) = 0.5 (1 + cos(pi t / T)) fading
from 1 to 0 over the epochs; at test time alpha = 0, so embedding needs no VAE.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vreid.config.loader import bounds
from vreid.engine.hooks import Hook
from vreid.engine.stages import Stage
from vreid.methods.base import METHODS, Batch, DataInfo
from vreid.methods.bot import BagOfTricks, BotConfig
from vreid.models.vae import ConvVAE, VaeConfig, from_unit_range, normalised_residual, to_unit_range

if TYPE_CHECKING:
    from vreid.config.schema import ExperimentConfig, OptimConfig


@dataclass
class VaeStageConfig:
    """How the run's first stage trains the VAE (its data, trunk-free; labels unused)."""

    epochs: int = field(default=30, metadata=bounds(1))
    lr: float = field(default=1e-3, metadata=bounds(max=10.0, above=0))
    #: augmentation of the VAE stage: flips only (no padding/cropping, no random erasing)
    flip_prob: float = field(default=0.5, metadata=bounds(0, 1))


@dataclass
class SaverConfig(BotConfig):
    name: str = "saver"
    vae: VaeConfig = field(default_factory=VaeConfig)
    vae_stage: VaeStageConfig = field(default_factory=VaeStageConfig)
    #: weight w of the residual in X' = (1 - w) X + w R (the start value when learned); 0 = no residual (`bot`)
    residual_weight: float = field(default=0.5, metadata=bounds(0, 1))
    #: learn w as sigmoid(a), a scalar initialised at logit(residual_weight)
    learn_residual_weight: bool = True
    #: folder of a trained `vae` run to use; empty: the run trains one first (its `vae` stage)
    vae_weights: str = ""
    #: vehicles shown in residuals.png (image, reconstruction, residual, mixed input) at the end of training
    residual_panel: int = field(default=6, metadata=bounds(0))
    #: "mix": SAVER's input mixing; "excite": the EVER variant (residual_weight then unused)
    residual_use: Literal["mix", "excite"] = "mix"
    #: excite: the trunk stages (1 = layer1, ...) whose output maps are excited (EVER: after Res-1 and Res-2)
    excite_stages: list[int] = field(default_factory=lambda: [1, 2])

    def uses_residual(self) -> bool:
        return self.residual_use == "excite" or self.learn_residual_weight or self.residual_weight > 0

    def validate(self) -> None:
        if not self.excite_stages or any(s not in (1, 2, 3, 4) for s in self.excite_stages):
            raise ValueError(f"excite_stages: stages are 1..4 (layer1..layer4), got {self.excite_stages}")


def excitation_alpha(epoch: int, epochs: int) -> float:
    """EVER's fading weight 0.5 (1 + cos(pi t / T)): 1 at the first epoch, 0 at the end (and after)."""
    return 0.5 * (1 + math.cos(math.pi * min(epoch, epochs) / max(epochs, 1)))


class ExcitationSchedule(Hook):
    """Before every epoch: the method's excitation weight from the epoch (EVER's cosine fade)."""

    def __init__(self, method: "Saver") -> None:
        self.method = method

    def before_epoch(self, trainer) -> None:
        self.method.excite_alpha = excitation_alpha(trainer.epoch, trainer.cfg.schedule.epochs)


class ResidualMixer(nn.Module):
    """X' = (1 - w) X + w R with w in [0, 1]: fixed, or sigmoid of a learned scalar."""

    def __init__(self, weight: float, learn: bool) -> None:
        super().__init__()
        if learn:
            if not 0 < weight < 1:
                raise ValueError(f"model.residual_weight: {weight} must lie strictly between 0 and 1 to start a "
                                 "learned weight (sigmoid of a finite scalar); or set learn_residual_weight=false")
            self.logit = nn.Parameter(torch.tensor(math.log(weight / (1 - weight))))
        else:
            self.register_buffer("fixed", torch.tensor(float(weight)), persistent=False)
            self.logit = None

    def weight(self) -> torch.Tensor:
        return torch.sigmoid(self.logit) if self.logit is not None else self.fixed

    def forward(self, image: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        w = self.weight().to(image.dtype)
        return (1 - w) * image + w * residual


class LoadVaeWeights(Hook):
    """Before the first step of a fresh run: the VAE from `vae_weights` (a resumed run has it in its checkpoint)."""

    def __init__(self, method: "Saver") -> None:
        self.method = method

    def before_train(self, trainer) -> None:
        if trainer.step == 0:
            self.method.load_vae(self.method.cfg.vae_weights)


class ResidualPanel(Hook):
    """After training: residuals.png in the run folder (a few vehicles: image | reconstruction | residual | input)."""

    def __init__(self, method: "Saver") -> None:
        self.method = method

    def after_train(self, trainer) -> None:
        if trainer.dist.is_main and self.method.cfg.residual_panel > 0:
            write_residual_panel(self.method, trainer.dataset.train, trainer.cfg.data,
                                 Path(trainer.output_dir) / "residuals.png", self.method.cfg.residual_panel,
                                 trainer.device)


@METHODS.register("saver")
class Saver(BagOfTricks):
    Config = SaverConfig

    def __init__(self, cfg: SaverConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        self.vae = ConvVAE(cfg.vae, info.height, info.width) if cfg.uses_residual() else None
        if self.vae is not None:
            self.vae.requires_grad_(False)
        # EVER feeds the image itself: a fixed weight 0, no learned parameter
        self.mixer = (ResidualMixer(cfg.residual_weight, cfg.learn_residual_weight) if cfg.residual_use == "mix"
                      else ResidualMixer(0.0, learn=False))
        #: EVER's excitation weight of the current epoch (set by ExcitationSchedule; 0 outside training)
        self.excite_alpha = 1.0
        if cfg.residual_use == "excite" and not all(hasattr(self.backbone, f"layer{i}") for i in cfg.excite_stages):
            raise ValueError(f"model.excite_stages: the backbone {cfg.backbone.name} has no stages layer1..layer4; "
                             "use a ResNet backbone or model.residual_use=mix")

    @classmethod
    def training_stages(cls, cfg: "ExperimentConfig") -> list[Stage]:
        """`vae` then `reid`, unless the VAE is given (model.vae_weights) or not used (residual weight 0)."""
        if cfg.model.vae_weights or not cfg.model.uses_residual():
            return []
        return [Stage("vae", vae_stage_config), Stage("reid", reid_stage_config)]

    def train(self, mode: bool = True) -> "Saver":
        super().train(mode)
        if self.vae is not None:
            self.vae.eval()  # frozen: its BN statistics stay those of its own training
        return self

    def load_vae(self, folder: str) -> None:
        if self.vae is None or not folder:
            return
        from vreid.engine.bundle import load_bundle

        trained = load_bundle(folder)
        if trained.cfg.name != "vae" or trained.cfg.vae != self.cfg.vae or \
                (trained.info.height, trained.info.width) != (self.info.height, self.info.width):
            raise ValueError(f"model.vae_weights: {folder} holds a {trained.cfg.name!r} model ({trained.cfg}, "
                             f"{trained.info.height}x{trained.info.width}), not a `vae` run with model.vae = "
                             f"{self.cfg.vae} at {self.info.height}x{self.info.width}")
        self.vae.load_state_dict(trained.vae.state_dict())

    def mixed_input(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The Re-ID input from loader images (mean/std normalised), with the unit-range pieces it came from."""
        if self.vae is None:
            return {"input": images}
        x, recon, residual = self.residual(images)
        mixed = self.mixer(x, residual)
        return {"input": from_unit_range(mixed, self.info.mean, self.info.std), "image": x, "recon": recon,
                "residual": residual, "mixed": mixed}

    def residual(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image in [0, 1], the frozen VAE's reconstruction, the normalised residual) of loader images."""
        x = to_unit_range(images, self.info.mean, self.info.std)
        with torch.no_grad():
            recon, _, _ = self.vae(x)
        return x, recon, normalised_residual(x, recon.to(x.dtype))

    def excitation_map(self, images: torch.Tensor) -> torch.Tensor:
        """EVER: the residual's intensity (channel mean of the normalised residual), (B, 1, H, W) in [0, 1]."""
        return self.residual(images)[2].mean(1, keepdim=True)

    def excited_forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """bot's forward with the maps after `excite_stages` excited: f + alpha * intensity * mean_c(f)."""
        intensity, alpha = self.excitation_map(batch["images"]), self.excite_alpha

        def excite(_module, _inputs, out):
            m = F.interpolate(intensity, size=out.shape[-2:], mode="bilinear", align_corners=False).to(out.dtype)
            return out + alpha * m * out.mean(1, keepdim=True)

        handles = [getattr(self.backbone, f"layer{i}").register_forward_hook(excite) for i in self.cfg.excite_stages]
        try:
            return super().forward(batch)
        finally:
            for h in handles:
                h.remove()

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self.cfg.residual_use == "excite":
            if self.training and self.excite_alpha > 0:
                return self.excited_forward(batch)
            return super().forward(batch)
        out = super().forward({**batch, "images": self.mixed_input(batch["images"])["input"]})
        out["residual_weight"] = self.mixer.weight().detach()
        return out

    @torch.no_grad()
    def embed(self, images, camera_ids=None, viewpoints=None) -> torch.Tensor:
        if self.cfg.residual_use == "excite":   # alpha = 0 at test time: the plain image, no VAE
            return super().embed(images, camera_ids, viewpoints)
        return super().embed(self.mixed_input(images)["input"], camera_ids, viewpoints)

    def hooks(self) -> list[Hook]:
        extra = [ExcitationSchedule(self)] if self.cfg.residual_use == "excite" else []
        return [*super().hooks(), LoadVaeWeights(self), ResidualPanel(self), *extra]

    def param_groups(self, optim: "OptimConfig") -> list[dict[str, Any]]:
        groups = super().param_groups(optim)
        if self.mixer.logit is None:
            return groups
        for g in groups:
            g["params"] = [p for p in g["params"] if p is not self.mixer.logit]
        return groups + [{"params": [self.mixer.logit], "lr": optim.lr, "weight_decay": 0.0}]


# ----- the stages -----------------------------------------------------------------------------------------------
def vae_stage_config(cfg: "ExperimentConfig", earlier: Mapping[str, Path]) -> "ExperimentConfig":
    """The VAE stage: the run's data and seed, model `vae` with model.vae, Adam at vae_stage.lr, cosine decay."""
    from vreid.config.schema import OptimConfig, ScheduleConfig, TransformConfig
    from vreid.methods.vae import VaeMethodConfig

    stage = cfg.model.vae_stage
    cfg.model = VaeMethodConfig(vae=copy.deepcopy(cfg.model.vae))
    cfg.optim = OptimConfig(name="adam", lr=stage.lr, weight_decay=0.0, weight_decay_bias=0.0)
    cfg.schedule = ScheduleConfig(name="warmup_cosine", epochs=stage.epochs, warmup_epochs=0, warmup_factor=1.0)
    cfg.data.transforms = TransformConfig(flip_prob=stage.flip_prob, pad=0, random_erasing=0.0)
    cfg.train.eval_every_epochs = 0
    return cfg


def reid_stage_config(cfg: "ExperimentConfig", earlier: Mapping[str, Path]) -> "ExperimentConfig":
    """The Re-ID stage: the run's config as given, reading the VAE the stage before trained."""
    cfg.model.vae_weights = str(earlier["vae"])
    return cfg


# ----- the residual panel ---------------------------------------------------------------------------------------
@torch.no_grad()
def write_residual_panel(method: Saver, records, data_cfg, path: Path, vehicles: int,
                         device: torch.device | str = "cpu") -> Path | None:
    """One row per vehicle (its first training image): image | reconstruction | residual | Re-ID input."""
    if method.vae is None or not records:
        return None
    from PIL import Image

    from vreid.data.images import open_rgb
    from vreid.data.transforms import build_test_transform
    from vreid.fileio import atomic_path

    picked, seen = [], set()
    for r in records:
        if r.vehicle_id not in seen:
            seen.add(r.vehicle_id)
            picked.append(r)
        if len(picked) == vehicles:
            break
    transform = build_test_transform(data_cfg)
    images = torch.stack([transform(open_rgb(r.path)) for r in picked]).to(device)
    was_training = method.training
    method.eval()
    parts = method.mixed_input(images.float())
    method.train(was_training)
    tiles = torch.cat([parts[k].float().clamp(0, 1) for k in ("image", "recon", "residual", "mixed")], dim=3)
    grid = torch.cat(list(tiles), dim=1)  # rows stacked: (3, n*H, 4*W)
    array = (grid.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return path
