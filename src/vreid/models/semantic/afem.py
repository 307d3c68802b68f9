"""AFEM, the Adaptive Fine-grained Enhancement Module of CLIP-SENet: group-wise learnable re-weighting of a
projected semantic vector, added back to it."""
from __future__ import annotations

import torch
from torch import nn

#: "group_scalar": the default reading (i); "branches": reading (iii). See `AFEM`.
AFEM_VARIANTS = ("group_scalar", "branches")


def kaiming_linear(layer: nn.Linear) -> nn.Linear:
    """Kaiming-normal (fan-out) weights and zero bias, the usual init for new Re-ID heads."""
    nn.init.kaiming_normal_(layer.weight, a=0, mode="fan_out")
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class AFEM(nn.Module):
    """T_s' = h + sum_i w_i (x) h_i, with h = f_linear(T_s) and f_linear = FC -> BatchNorm1d -> ReLU.

    The paper (Lu et al., CLIP-SENet, Eq. 4) writes a sum of G+1 terms, one unweighted residual and G "grouped"
    vectors each multiplied by a learnable weight w_i ~ N(0, 1), while the text speaks of G groups; it does not
    say whether a group is a slice of h or a whole vector, nor whether w_i is a scalar or a vector. Readings:

    - ``group_scalar`` (default): split h (D values) into G contiguous groups of D/G; group i is scaled by its
      own scalar w_i; the unscaled h is the residual. Exactly G weights, and G changes the model, as the
      paper's G ablation requires.
    - ``branches``: f_linear emits (G+1) x D values: a residual vector plus G full-width vectors, each scaled by
      its scalar w_i and summed. Also G weights, but f_linear is G+1 times wider.
    - (not offered) one weight per element of each group: that is a single D-wide gate for every G, which
      would make G irrelevant and contradicts the ablation.
    """

    def __init__(self, in_dim: int, out_dim: int, groups: int = 32, variant: str = "group_scalar") -> None:
        super().__init__()
        if variant not in AFEM_VARIANTS:
            raise ValueError(f"AFEM variant {variant!r} is not one of {', '.join(AFEM_VARIANTS)}")
        if groups < 1 or (variant == "group_scalar" and out_dim % groups):
            raise ValueError(f"AFEM: {groups} groups do not divide the feature size {out_dim}")
        self.out_dim, self.groups, self.variant = out_dim, groups, variant
        width = out_dim if variant == "group_scalar" else out_dim * (groups + 1)
        self.f_linear = nn.Sequential(kaiming_linear(nn.Linear(in_dim, width)), nn.BatchNorm1d(width), nn.ReLU())
        self.group_weights = nn.Parameter(torch.randn(groups))

    def forward(self, semantic: torch.Tensor) -> torch.Tensor:
        h = self.f_linear(semantic)
        b, g, d = h.shape[0], self.groups, self.out_dim
        w = self.group_weights.to(h.dtype)
        if self.variant == "group_scalar":
            return h + (h.view(b, g, d // g) * w[None, :, None]).reshape(b, d)
        h = h.view(b, g + 1, d)
        return h[:, 0] + (h[:, 1:] * w[None, :, None]).sum(dim=1)
