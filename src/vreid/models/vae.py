"""A small convolutional VAE that coarsely reconstructs vehicle images, and the residual SAVER reads from it.

Encoder: one stride-2 4x4 conv block (BN + LeakyReLU 0.2) per width, flatten, two linear heads (mu, log var).
Decoder: the mirror (linear -> map, 4x4 stride-2 transposed convs with BN + ReLU, 3x3 conv to RGB, sigmoid).
Images are in [0, 1]; the reconstruction is too.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from vreid.config.loader import bounds


@dataclass
class VaeConfig:
    #: channels of the encoder's stride-2 blocks (the decoder mirrors them); the image sides must divide by
    #: 2 ** len(widths)
    widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512])
    latent_dim: int = field(default=512, metadata=bounds(1))
    #: KL weight beta of the ELBO (reconstruction weight 1)
    beta: float = field(default=1.0, metadata=bounds(0))


def _check_sides(cfg: VaeConfig, height: int, width: int) -> tuple[int, int]:
    if not cfg.widths or any(w < 1 for w in cfg.widths):
        raise ValueError(f"model.vae.widths: {cfg.widths} must be a non-empty list of positive channel counts")
    step = 2 ** len(cfg.widths)
    if height % step or width % step:
        raise ValueError(f"model.vae.widths: {len(cfg.widths)} stride-2 blocks need image sides divisible by {step}, "
                         f"got {height}x{width}; change data.height/width or the number of widths")
    return height // step, width // step


class ConvVAE(nn.Module):
    def __init__(self, cfg: VaeConfig, height: int, width: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.map_size = _check_sides(cfg, height, width)
        blocks, c_in = [], 3
        for c in cfg.widths:
            blocks += [nn.Conv2d(c_in, c, 4, 2, 1, bias=False), nn.BatchNorm2d(c), nn.LeakyReLU(0.2, inplace=True)]
            c_in = c
        self.encoder = nn.Sequential(*blocks)
        flat = cfg.widths[-1] * self.map_size[0] * self.map_size[1]
        self.to_mu = nn.Linear(flat, cfg.latent_dim)
        self.to_logvar = nn.Linear(flat, cfg.latent_dim)
        self.from_latent = nn.Linear(cfg.latent_dim, flat)
        blocks = []
        outs = [*reversed(cfg.widths[:-1]), cfg.widths[0]]
        for c_in, c in zip(reversed(cfg.widths), outs):
            blocks += [nn.ConvTranspose2d(c_in, c, 4, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        self.decoder = nn.Sequential(*blocks, nn.Conv2d(outs[-1], 3, 3, 1, 1), nn.Sigmoid())

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x).flatten(1)
        return self.to_mu(h), self.to_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_latent(z).view(len(z), self.cfg.widths[-1], *self.map_size)
        return self.decoder(h)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction, mu, log var); samples z in training mode, decodes mu in eval mode."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.decode(z), mu, logvar


def reconstruction_term(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """||x - recon||^2 summed over pixels and channels, averaged over the batch."""
    return (x.float() - recon.float()).pow(2).flatten(1).sum(1).mean()


def kl_term(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over the latent, averaged over the batch."""
    mu, logvar = mu.float(), logvar.float()
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()


def normalised_residual(x: torch.Tensor, recon: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x - recon, min-max normalised to [0, 1] per image and channel; a constant residual (e.g. a perfect
    reconstruction) gives 0, not a division by zero."""
    r = x - recon
    flat = r.flatten(2)
    lo, hi = flat.min(2, keepdim=True).values, flat.max(2, keepdim=True).values
    span = hi - lo
    out = torch.where(span > eps, (flat - lo) / span.clamp_min(eps), torch.zeros_like(flat))
    return out.view_as(r)


def to_unit_range(images: torch.Tensor, mean, std) -> torch.Tensor:
    """Undo the loader's mean/std normalisation: images back in [0, 1] (random-erasing noise is clipped)."""
    m = images.new_tensor(mean).view(1, -1, 1, 1)
    s = images.new_tensor(std).view(1, -1, 1, 1)
    return (images * s + m).clamp(0, 1)


def from_unit_range(images: torch.Tensor, mean, std) -> torch.Tensor:
    m = images.new_tensor(mean).view(1, -1, 1, 1)
    s = images.new_tensor(std).view(1, -1, 1, 1)
    return (images - m) / s
