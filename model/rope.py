"""Rotary position embeddings: the reference's "default" (sliding) and "proportional" (full layers) forms.

Legend: B batch, T tokens, D head dim. Inverse frequencies are computed exactly as transformers does (fp32,
`base ** (arange / dim)`), cos/sin in fp32 and then cast to the activation dtype, and the rotation
(kernels/norm_rope.py, fused with the q/k norm) is the rotate-half convention:
`x*cos + rotate_half(x)*sin` with `cos = cat(f, f)`.
Proportional RoPE rotates only the first `int(partial * D // 2)` frequency pairs, with exponents over the
*full* D; the remaining frequencies are 0, so those dims pass through (cos=1, sin=0).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch


def inv_freq(rope: dict[str, Any], head_dim: int) -> torch.Tensor:
    """[D/2] fp32 inverse frequencies for one layer type (CPU; callers move them)."""
    return _inv_freq(
        rope["rope_type"],
        float(rope["rope_theta"]),
        float(rope.get("partial_rotary_factor", 1.0)),
        float(rope.get("factor", 1.0)),
        head_dim,
    ).clone()


@lru_cache(maxsize=64)
def _inv_freq(kind: str, base: float, partial: float, factor: float, head_dim: int) -> torch.Tensor:
    if kind == "default":
        if partial != 1.0:
            raise ValueError(
                "rope_parameters.partial_rotary_factor: only 1.0 is supported with rope_type 'default'"
            )
        dim = head_dim
        return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float, device="cpu") / dim))
    if kind == "proportional":
        n_rot = int(partial * head_dim // 2)
        rotated = 1.0 / (
            base ** (torch.arange(0, 2 * n_rot, 2, dtype=torch.int64, device="cpu").float() / head_dim)
        )
        freq = torch.cat([rotated, torch.zeros(head_dim // 2 - n_rot, dtype=torch.float32, device="cpu")])
        return freq / factor
    raise ValueError(f"rope_parameters.rope_type: unsupported {kind!r}")


def cos_sin(
    positions_BT: torch.Tensor, inv_freq_F: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape [B, T, D] in `dtype` (computed in fp32 like the reference)."""
    f = positions_BT[..., None].float() * inv_freq_F.to(device=positions_BT.device, dtype=torch.float)
    emb = torch.cat((f, f), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)
