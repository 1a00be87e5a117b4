"""Attention: the per-layer q/k/v projections with their norms and RoPE, and the masked attention kernel.

Legend: B batch, T query tokens, S key tokens, H hidden, Hq query heads, KV key/value heads, G = Hq/KV,
D head dim. Conventions of the reference (modeling_diffusion_gemma.py, DiffusionGemma*TextAttention):
  * q = RoPE(q_norm(q_proj x)); k = RoPE(k_norm(k_proj x)); v = v_norm(v_proj x), where full-attention
    layers have no v_proj and take v from the *raw* k projection; v_norm has no scale and no RoPE.
  * scaling 1.0 (the q/k norms replace 1/sqrt(D)), no logit softcap, softmax in fp32 then cast back.
  * GQA: query head h reads KV head h // G.
`attend` is the single entry point for the masked attention math so a fused kernel can replace it later.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import kernels
from model.config import TextConfig
from model.norm import RMSNorm, rms_norm


def attend(
    q_BHTD: torch.Tensor, k_BKSD: torch.Tensor, v_BKSD: torch.Tensor, mask_BTS: torch.Tensor
) -> torch.Tensor:
    """Masked GQA attention, scale 1.0 -> o [B, Hq, T, D].

    mask_BTS is boolean (True = visible) and broadcastable to [B, T, S]. Masked scores are set to the dtype's
    finite minimum, so a fully masked query row yields a uniform (finite) average instead of NaN.
    """
    B, Hq, T, D = q_BHTD.shape
    KV, S = k_BKSD.shape[1], k_BKSD.shape[2]
    G = Hq // KV
    # Grouped view instead of repeating K/V: heads [kv0: g0..gG-1, kv1: ...] match h // G.
    q = q_BHTD.reshape(B, KV, G * T, D)
    scores = torch.matmul(q, k_BKSD.transpose(-1, -2)).view(B, KV, G, T, S)
    mask = mask_BTS.expand(B, T, S)[:, None, None]
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q_BHTD.dtype)
    out = torch.matmul(probs.view(B, KV, G * T, S), v_BKSD)
    return out.view(B, Hq, T, D)


class Attention(nn.Module):
    """One layer's projections. `qkv` produces rotated q/k and normed v; `out` applies o_proj."""

    def __init__(self, cfg: TextConfig, layer: int):
        super().__init__()
        H, Hq = cfg.hidden_size, cfg.num_attention_heads
        self.head_dim = D = cfg.layer_head_dim(layer)
        self.kv_heads = KV = cfg.layer_kv_heads(layer)
        self.eps = cfg.rms_norm_eps
        self.q_proj = nn.Linear(H, Hq * D, bias=False)
        self.k_proj = nn.Linear(H, KV * D, bias=False)
        # Full-attention layers share K and V projections (V = raw K), so they have no v_proj at all.
        self.v_proj = nn.Linear(H, KV * D, bias=False) if cfg.is_sliding(layer) else None
        self.o_proj = nn.Linear(Hq * D, H, bias=False)
        self.q_norm = RMSNorm(D, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(D, cfg.rms_norm_eps)

    def qkv(self, x_BTH: torch.Tensor, cos_BTD: torch.Tensor, sin_BTD: torch.Tensor):
        """-> q [B, Hq, T, D], k [B, KV, T, D], v [B, KV, T, D] (the cache stores k and v as returned)."""
        B, T, _ = x_BTH.shape
        D = self.head_dim
        # q_norm / k_norm then RoPE: one fused op (kernels/norm_rope.py)
        q = kernels.norm_rope(self.q_proj(x_BTH).view(B, T, -1, D), self.q_norm.weight, self.eps, cos_BTD,
                              sin_BTD).transpose(1, 2)
        k_raw = self.k_proj(x_BTH).view(B, T, -1, D)
        v_raw = self.v_proj(x_BTH).view(B, T, -1, D) if self.v_proj is not None else k_raw
        k = kernels.norm_rope(k_raw, self.k_norm.weight, self.eps, cos_BTD, sin_BTD).transpose(1, 2)
        v = rms_norm(v_raw, None, self.eps).transpose(1, 2)
        return q, k, v

    def out(self, o_BHTD: torch.Tensor) -> torch.Tensor:
        B, _, T, _ = o_BHTD.shape
        return self.o_proj(o_BHTD.transpose(1, 2).reshape(B, T, -1))
