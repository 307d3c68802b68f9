"""Global pooling of a backbone's output to one vector per image; token inputs (B, N, C) give their first token."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vreid.registry import Registry

#: name -> pooling module class; every one maps (B, C, H, W) -> (B, C) and (B, N, C) -> (B, C) (token 0).
POOLS: Registry[type[nn.Module]] = Registry("pooling")


class _Pool(nn.Module):
    def pool_map(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:  # tokens: the class / global token comes first by the backbone contract
            return x[:, 0]
        if x.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects (B, C, H, W) or (B, N, C), got {tuple(x.shape)}")
        return self.pool_map(x)


@POOLS.register("gap")
class GAP(_Pool):
    """Global average pooling."""

    def pool_map(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


@POOLS.register("gmp")
class GMP(_Pool):
    """Global max pooling."""

    def pool_map(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3))


@POOLS.register("avgmax")
class AvgMaxPool(_Pool):
    """Sum of global average and global max pooling."""

    def pool_map(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) + x.amax(dim=(2, 3))


@POOLS.register("gem")
class GeM(_Pool):
    """Generalised-mean pooling, (mean x^p)^(1/p): p=1 is GAP, large p approaches GMP. p learnable by default."""

    def __init__(self, p: float = 3.0, learnable: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learnable)
        self.eps = eps

    def pool_map(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.clamp(min=1.0)
        return x.clamp(min=self.eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.3f}, learnable={self.p.requires_grad}"


def make_pool(name: str, **kwargs: Any) -> nn.Module:
    """Build pooling `name` (see `POOLS`) with its options, e.g. ``make_pool("gem", p=4.0, learnable=False)``."""
    return POOLS.get(name)(**kwargs)
