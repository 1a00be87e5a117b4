"""One transformer block, shared by the encoder and decoder passes (they differ only in attention masking,
cache handling and which `layer_scalar` copy they use).

Legend: B batch, T tokens, H hidden. Block order (reference DiffusionGemma*TextLayer.forward):
    r = h + post_attention_layernorm(attn(input_layernorm(h)))
    d = post_feedforward_layernorm_1(mlp(pre_feedforward_layernorm(r)))          # dense "shared expert"
    m = post_feedforward_layernorm_2(experts(pre_feedforward_layernorm_2(r), router(r)))   # router on raw r
    h = (r + post_feedforward_layernorm(d + m)) * layer_scalar
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

import kernels
from model.attention import Attention
from model.config import TextConfig
from model.moe import Experts, Router
from model.norm import RMSNorm


class DenseMLP(nn.Module):
    """Gated GELU(tanh) MLP, also the shape of the self-conditioning MLP."""

    def __init__(self, hidden: int, inter: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # gelu_tanh(gate) * up: one launch on the GPU (kernels/gelu_mul.py)
        return self.down_proj(kernels.gelu_mul(self.gate_proj(x), self.up_proj(x)))


# attention callback supplied by the pass: (q [B,Hq,T,D], k [B,KV,T,D], v [B,KV,T,D]) -> o [B,Hq,T,D]
AttendFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class Block(nn.Module):
    """Attention + parallel dense MLP and MoE. Holds both layer_scalar copies as buffers."""

    def __init__(self, cfg: TextConfig, layer: int):
        super().__init__()
        H, eps = cfg.hidden_size, cfg.rms_norm_eps
        self.self_attn = Attention(cfg, layer)
        self.mlp = DenseMLP(H, cfg.intermediate_size)
        self.router = Router(cfg)
        self.experts = Experts(cfg)
        self.input_layernorm = RMSNorm(H, eps)
        self.post_attention_layernorm = RMSNorm(H, eps)
        self.pre_feedforward_layernorm = RMSNorm(H, eps)
        self.post_feedforward_layernorm_1 = RMSNorm(H, eps)
        self.pre_feedforward_layernorm_2 = RMSNorm(H, eps)
        self.post_feedforward_layernorm_2 = RMSNorm(H, eps)
        self.post_feedforward_layernorm = RMSNorm(H, eps)
        # Decoder copy (model.decoder.layers.i.layer_scalar) and encoder copy
        # (model.encoder.language_model.layers.i.layer_scalar): buffers are not tied in the checkpoint.
        self.register_buffer("layer_scalar", torch.ones(1))
        self.register_buffer("encoder_layer_scalar", torch.ones(1))

    def forward(
        self, h_BTH: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend: AttendFn, encoder: bool
    ) -> torch.Tensor:
        q, k, v = self.self_attn.qkv(self.input_layernorm(h_BTH), cos, sin)
        r = self.post_attention_layernorm(self.self_attn.out(attend(q, k, v)), residual=h_BTH)
        # the dense MLP's and the experts' pre-norms of r: one read, one launch on the GPU
        pre_1, pre_2 = self.pre_feedforward_layernorm, self.pre_feedforward_layernorm_2
        pre_d, pre_m = kernels.rms_norm_pair(r, pre_1.weight, pre_2.weight, pre_1.eps)
        d = self.mlp(pre_d)
        r_TH = r.reshape(-1, r.shape[-1])
        idx, w = self.router(r_TH)
        m = self.experts(pre_m.reshape(r_TH.shape), idx, w).view_as(r)
        # (r + norm(post_1(d) + post_2(m))) * layer_scalar, one fused call
        return self.post_feedforward_layernorm(
            d, add=m, residual=r, scale=self.encoder_layer_scalar if encoder else self.layer_scalar,
            norm_x=self.post_feedforward_layernorm_1, norm_add=self.post_feedforward_layernorm_2)
