"""Mixture of experts: the router, the expert weights, and `moe_forward` (the dispatchable expert math).

Legend: T flat tokens, H hidden, E experts, k top-k, F = 2*Im (gate rows then up rows, concatenated),
I = Im expert width. Reference: DiffusionGemmaTextRouter / DiffusionGemmaTextExperts with transformers'
default `grouped_mm` experts implementation, whose numerics we copy: each expert's output (activation dtype)
times its fp32 routing weight, summed over the top-k in fp32 *in top-k order*, cast once. That matches HF
bit-exactly in bf16 (the eager HF loop, which rounds every contribution, does not).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import kernels
from model.config import TextConfig


def moe_forward(
    x_TH: torch.Tensor,
    topk_idx_Tk: torch.Tensor,
    topk_w_Tk: torch.Tensor,
    gate_up_EFH: torch.Tensor,
    down_EHI: torch.Tensor,
) -> torch.Tensor:
    """Routed experts: y_T = sum_k w_Tk * down_e(gelu_tanh(gate_e x) * up_e x), e = topk_idx_Tk -> y_TH.

    Pairs (token, slot) are sorted by expert and each expert with tokens runs one batched matmul, so the
    Python loop is over active experts only. Differentiable (no in-place writes on autograd tensors).
    """
    if kernels.backend_for("fused_moe", x_TH, topk_w_Tk, gate_up_EFH, down_EHI) != "torch":
        # The one dispatch switch (kernels/__init__.py): Triton on CUDA once its self-check passed, or an
        # alternative a per-op override chose (PyTorch's grouped GEMM).
        return kernels.fused_moe(x_TH, topk_idx_Tk, topk_w_Tk, gate_up_EFH, down_EHI)
    T, H = x_TH.shape
    k = topk_idx_Tk.shape[1]
    E = gate_up_EFH.shape[0]
    flat_e = topk_idx_Tk.reshape(-1)
    order = torch.argsort(flat_e, stable=True)  # pair ids sorted by expert
    counts = torch.bincount(flat_e, minlength=E).tolist()
    xs = x_TH.index_select(0, order // k)
    outs, start = [], 0
    for e, n in enumerate(counts):
        if n == 0:
            continue
        seg = xs[start : start + n]
        gate, up = F.linear(seg, gate_up_EFH[e]).chunk(2, dim=-1)
        outs.append(F.linear(F.gelu(gate, approximate="tanh") * up, down_EHI[e]))
        start += n
    y_sorted = torch.cat(outs, dim=0) if outs else x_TH.new_zeros(0, H)
    weighted = y_sorted * topk_w_Tk.reshape(-1).index_select(0, order).unsqueeze(-1)  # fp32 by promotion
    inv = torch.empty_like(order)
    inv[order] = torch.arange(order.numel(), device=order.device)
    return weighted.index_select(0, inv).view(T, k, H).sum(dim=1).to(x_TH.dtype)


class Router(nn.Module):
    """Top-k router on the *un-normed* residual: unscaled RMSNorm, * scale * H^-0.5, linear, softmax."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.top_k = cfg.top_k_experts
        self.eps = cfg.rms_norm_eps
        self.proj = nn.Linear(cfg.hidden_size, cfg.num_experts, bias=False)
        self.scale = nn.Parameter(torch.ones(cfg.hidden_size))
        self.per_expert_scale = nn.Parameter(torch.ones(cfg.num_experts))

    def forward(self, r_TH: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (topk_idx_Tk long, topk_w_Tk fp32): renormalised to sum 1, then times per_expert_scale.
        The math is kernels/router.py (three launches on the GPU, the reference's ops on the CPU)."""
        return kernels.route(r_TH, self.scale, self.proj.weight, self.per_expert_scale, self.top_k, self.eps)


class Experts(nn.Module):
    """Expert weights stored exactly as the checkpoint: gate_up_proj [E, 2*Im, H], down_proj [E, H, Im]."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        E, H, Im = cfg.num_experts, cfg.hidden_size, cfg.moe_intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(E, 2 * Im, H))
        self.down_proj = nn.Parameter(torch.empty(E, H, Im))

    def forward(self, x_TH: torch.Tensor, idx_Tk: torch.Tensor, w_Tk: torch.Tensor) -> torch.Tensor:
        return moe_forward(x_TH, idx_Tk, w_Tk, self.gate_up_proj, self.down_proj)
