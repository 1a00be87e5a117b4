"""RMSNorm as DiffusionGemma defines it: fp32 math, scale by `w` (not `1 + w`), optional scale."""

from __future__ import annotations

import torch
from torch import nn


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """`x * (mean(x^2) + eps)^-0.5 [* w]` in fp32, cast back to x's dtype (pow, not rsqrt, as reference)."""
    xf = x.float()
    y = xf * torch.pow(xf.pow(2).mean(-1, keepdim=True) + eps, -0.5)
    if weight is not None:
        y = y * weight.float()
    return y.type_as(x)


class RMSNorm(nn.Module):
    """Scaled RMSNorm; unscaled norms (v_norm, router norm, self-conditioning post_norm) use rms_norm."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)
