"""`vae`: a convolutional VAE trained on the vehicle images without labels (SAVER's first stage).

Losses: the ELBO, reconstruction (squared error summed over pixels) + beta * KL. Its embedding (the latent mean,
L2-normalised) is a weak retrieval baseline; what later stages use is the reconstruction (`reconstruct`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from vreid.methods.base import METHODS, Batch, DataInfo, MethodConfig, ReidMethod
from vreid.models.vae import ConvVAE, VaeConfig, kl_term, reconstruction_term, to_unit_range


@dataclass
class VaeMethodConfig(MethodConfig):
    name: str = "vae"
    vae: VaeConfig = field(default_factory=VaeConfig)


@METHODS.register("vae")
class VaeMethod(ReidMethod):
    Config = VaeMethodConfig

    def __init__(self, cfg: VaeMethodConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        self.vae = ConvVAE(cfg.vae, info.height, info.width)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = to_unit_range(batch["images"], self.info.mean, self.info.std)
        recon, mu, logvar = self.vae(x)
        return {"target": x, "recon": recon, "mu": mu, "logvar": logvar}

    def losses(self, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        out = {"reconstruction": reconstruction_term(outputs["target"], outputs["recon"])}
        if self.cfg.vae.beta > 0:
            out["kl"] = self.cfg.vae.beta * kl_term(outputs["mu"], outputs["logvar"])
        return out

    @torch.no_grad()
    def embed(self, images, camera_ids=None, viewpoints=None) -> torch.Tensor:
        mu, _ = self.vae.encode(to_unit_range(images, self.info.mean, self.info.std))
        return F.normalize(mu, dim=1)
