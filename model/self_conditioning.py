"""Self-conditioning block of the decoder (reference DiffusionGemmaSelfConditioning + decoder forward).

Legend: B batch, C canvas, V vocab, H hidden. With previous-step logits l (already temperature-processed):
    soft = (softmax_f32(l).to(E.dtype) @ E) * embed_scale ;  n = pre_norm(soft)
    x    = post_norm_noscale(embed(canvas) + down(gelu_tanh(gate n) * up n))
Without logits soft = 0, which makes the MLP term exactly 0, so we skip it but still apply post_norm.
The fast mode passes `soft_BCH` itself (computed inside its chunked vocabulary pass, engine/vocab_head.py,
without a [B, C, V] softmax); a zero row of soft_BCH is exactly "no self-conditioning" for that row. The GPU
head mode passes the probabilities (`probs_BCV`), written by the previous step straight from its LM head.
"""

from __future__ import annotations

import torch

import kernels
from model.layer import DenseMLP
from model.norm import RMSNorm, rms_norm


class SelfConditioning(DenseMLP):
    """gate/up/down_proj (inherited) plus a scaled pre_norm; post_norm has no weight."""

    def __init__(self, hidden: int, inter: int, eps: float):
        super().__init__(hidden, inter)
        self.eps = eps
        self.pre_norm = RMSNorm(hidden, eps)

    def forward(
        self,
        emb_BCH: torch.Tensor,
        sc_logits_BCV: torch.Tensor | None,
        embed_VH: torch.Tensor,
        scale: torch.Tensor,
        sc_mask_B: torch.Tensor | None = None,
        *,
        soft_BCH: torch.Tensor | None = None,
        probs_BCV: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if soft_BCH is not None:
            soft = soft_BCH.to(emb_BCH.dtype)
        elif sc_logits_BCV is None and probs_BCV is None:
            return rms_norm(emb_BCH, None, self.eps)
        else:
            # fp32 softmax written in the embedding dtype: one fused pass on the GPU (kernels/softmax.py),
            # or already done by the previous step's head (probs_BCV)
            probs = probs_BCV if probs_BCV is not None else kernels.softmax(sc_logits_BCV, embed_VH.dtype)
            soft = torch.matmul(probs, embed_VH) * scale.to(emb_BCH.dtype)
        if sc_mask_B is not None:  # training: per-row "no self-conditioning"
            soft = soft * sc_mask_B.to(soft.dtype)[:, None, None]
        return rms_norm(emb_BCH + super().forward(self.pre_norm(soft)), None, self.eps)
