"""Self-conditioning block of the decoder (reference DiffusionGemmaSelfConditioning + decoder forward).

Legend: B batch, C canvas, V vocab, H hidden. With previous-step logits l (already temperature-processed):
    soft = (softmax_f32(l).to(E.dtype) @ E) * embed_scale ;  n = pre_norm(soft)
    x    = post_norm_noscale(embed(canvas) + down(gelu_tanh(gate n) * up n))
Without logits soft = 0, which makes the MLP term exactly 0, so we skip it but still apply post_norm.
The block takes `soft` itself, whoever computed it: DiffusionGemma.sc_soft from logits (reference mode,
training), the fast mode's chunked vocabulary pass (engine/vocab_head.py, without a [B, C, V] softmax) or the
GPU head's probabilities; a zero row of soft is exactly "no self-conditioning" for that row.
"""

from __future__ import annotations

import torch

from model.layer import DenseMLP
from model.norm import RMSNorm, rms_norm


class SelfConditioning(DenseMLP):
    """gate/up/down_proj (inherited) plus a scaled pre_norm; post_norm has no weight."""

    def __init__(self, hidden: int, inter: int, eps: float):
        super().__init__(hidden, inter)
        self.eps = eps
        self.pre_norm = RMSNorm(hidden, eps)

    def forward(self, emb_BCH: torch.Tensor, soft_BCH: torch.Tensor | None) -> torch.Tensor:
        """soft_BCH: softmax(previous logits) @ E * embed_scale (DiffusionGemma.sc_soft), or None."""
        if soft_BCH is None:
            return rms_norm(emb_BCH, None, self.eps)
        soft = soft_BCH.to(emb_BCH.dtype)
        return rms_norm(emb_BCH + super().forward(self.pre_norm(soft)), None, self.eps)
