"""Routed-expert MLP with quantized expert weights: its argument contract, torch reference, Triton launcher
and self-check. The computation is kernels/fused_moe.py's, written there once for dense and quantized weights.

y_TH = sum over j in top-k order of w_Tk[:, j] * down[e_j](gelu_tanh(gate[e_j] x) * up[e_j] x), gate_up a
`QuantTensor` [E, 2I, H] (gate rows then up rows), down [E, H, I] (layout: kernels/dequant.py). The contract
and precision are fused_moe's `fused_moe_torch` with w = dequantize(w) (each weight value rounded as
kernels/dequant.py rounds it, then cast to x's dtype).

Torch reference (also the CPU path): fused_moe's loop over experts that received tokens (`experts_torch`),
dequantizing only those experts, one at a time, so a quantized model never holds a dense copy of all its
experts.

Triton path: fused_moe's launches (`experts_triton`): the align kernels of kernels/moe_align.py, then the
gate_up and down GEMMs per aligned block, whose K loops dequantize the expert's packed weight tile in
registers with kernels/quant_linear.py's `dequant_tile`, then the fp32 top-k combine.

Legend: T tokens, H hidden, E experts, k top-k, I expert width, F = 2I gate+up rows.
"""

from __future__ import annotations

import torch

from kernels.dequant import QuantTensor, dequantize
from kernels.fused_moe import SELFCHECK_SHAPE, check_routing, experts_torch, experts_triton, selfcheck_routing
from kernels.quant_linear import random_quant_weights


# ---- torch reference: the spec, and the CPU path ----------------------------------------------------------
def quant_moe_torch(x_TH: torch.Tensor, topk_idx_Tk: torch.Tensor, topk_w_Tk: torch.Tensor,
                    gate_up: QuantTensor, down: QuantTensor) -> torch.Tensor:
    """fused_moe_torch's loop, each expert that received tokens dequantized on its own."""
    return experts_torch(x_TH, topk_idx_Tk, topk_w_Tk, gate_up.data.shape[0],
                         lambda e: (dequantize(gate_up.expert(e), x_TH.dtype),
                                    dequantize(down.expert(e), x_TH.dtype)))


def check_quant_moe_args(x_TH: torch.Tensor, topk_idx_Tk: torch.Tensor, topk_w_Tk: torch.Tensor,
                         gate_up: QuantTensor, down: QuantTensor) -> None:
    """Shape/dtype contract shared by both backends; raises ValueError naming the bad argument."""
    for name, w in (("gate_up", gate_up), ("down", down)):
        if not isinstance(w, QuantTensor) or w.data.dim() != 3:
            got = f"shape {list(w.shape)}" if isinstance(w, QuantTensor) else type(w).__name__
            raise ValueError(f"quant_moe: {name} must be a 3-D QuantTensor, got {got}")
    if x_TH.dim() != 2 or x_TH.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"quant_moe: x_TH must be 2-D float32/bfloat16/float16, got {tuple(x_TH.shape)} "
                         f"{x_TH.dtype}")
    check_routing("quant_moe", x_TH, topk_idx_Tk, topk_w_Tk, gate_up.shape, down.shape)
    for name, w in (("gate_up", gate_up), ("down", down)):
        if w.data.device != x_TH.device:
            raise ValueError(f"quant_moe: {name}.data is on {w.data.device}, x_TH on {x_TH.device}")


# ---- Triton launcher (the kernels: kernels/fused_moe.py) ---------------------------------------------------
def quant_moe_triton(x_TH: torch.Tensor, topk_idx_Tk: torch.Tensor, topk_w_Tk: torch.Tensor,
                     gate_up: QuantTensor, down: QuantTensor, *, block_m: int | None = None,
                     block_n: int = 64, block_k: int = 64, num_warps: int = 4,
                     num_stages: int | None = None) -> torch.Tensor:
    """Triton launcher with the same contract as `quant_moe_torch` (tiles as `fused_moe_triton`'s, both
    GEMMs on one tile; BK is narrowed where a weight's K is smaller, see kernels/quant_linear.py
    `block_k_for`)."""
    check_quant_moe_args(x_TH, topk_idx_Tk, topk_w_Tk, gate_up, down)
    return experts_triton(x_TH, topk_idx_Tk, topk_w_Tk, gate_up, down, block_m,
                          (block_n, block_k, num_warps, num_stages), None)


def selfcheck(device: torch.device) -> bool:
    """One-time kernel-vs-reference comparison on `device` in bf16, every scheme, at fused_moe's
    SELFCHECK_SHAPE with an expert that gets no token."""
    g, x, idx, w = selfcheck_routing(device)
    _, H, E, _, I = SELFCHECK_SHAPE  # noqa: E741
    ok = True
    for gu, dn in zip(random_quant_weights((E,), 2 * I, H, g, device),
                      random_quant_weights((E,), H, I, g, device)):
        ref = quant_moe_torch(x.float(), idx, w, gu, dn)
        out = quant_moe_triton(x, idx, w, gu, dn).float()
        ok &= bool(((out - ref).abs().max() <= 0.05 * ref.abs().max() + 1e-3).item())
    return ok
