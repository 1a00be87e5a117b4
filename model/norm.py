"""RMSNorm as DiffusionGemma defines it: fp32 math, scale by `w` (not `1 + w`), optional scale.

The math (and its fused Triton twin for CUDA) lives in kernels/rms_norm.py; this module is the layer.
"""

from __future__ import annotations

import torch
from torch import nn

import kernels


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """`x * (mean(x^2) + eps)^-0.5 [* w]` in fp32, cast back to x's dtype (pow, not rsqrt, as reference)."""
    return kernels.rms_norm(x, weight, eps)


class RMSNorm(nn.Module):
    """Scaled RMSNorm; unscaled norms (v_norm, router norm, self-conditioning post_norm) use rms_norm.

    `add`, `residual` and `scale` fold the block's neighbouring ops into the same call (one launch on CUDA):
    `residual + norm(x + add)`, then `* scale`.
    """

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, *, add: torch.Tensor | None = None,
                residual: torch.Tensor | None = None, scale: torch.Tensor | None = None,
                norm_x: RMSNorm | None = None, norm_add: RMSNorm | None = None) -> torch.Tensor:
        """norm_x / norm_add: norms (same eps) applied to x / add first, in the same launch on the GPU."""
        return kernels.rms_norm(x, self.weight, self.eps, add=add, residual=residual, scale=scale,
                                norm_x=None if norm_x is None else norm_x.weight,
                                norm_add=None if norm_add is None else norm_add.weight)
