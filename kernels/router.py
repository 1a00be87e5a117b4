"""The MoE router: torch reference, two Triton kernels around the router GEMM, launcher. Reference model:
`DiffusionGemmaTextRouter` in https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/models/diffusion_gemma/modeling_diffusion_gemma.py

    z = rms_norm(r) * scale * H^-0.5                     unscaled norm of the raw residual, then two scalings
    p = softmax(z @ proj^T) in fp32                      [T, E]
    w, idx = top-k(p);  w = w / sum(w) * per_expert_scale[idx]      (top-k order: descending p)

Why: in torch this is ten launches per layer (norm, two products, GEMM, upcast, softmax, top-k, sum, division,
gather, product) on tensors of a few KB; on the GPU path they were a quarter of a decoder layer's launches.
The Triton form is three: the norm with both scalings (rounding to the activation dtype after each step as
torch does), the GEMM (cuBLAS), and one kernel for softmax, top-k by k rounds of argmax, renormalisation and
the per-expert scale. Equal probabilities go to the lower expert index (torch.topk leaves ties unspecified).

Legend: T tokens, H hidden, E experts (EP = next power of two), k top-k.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels._triton_compat import interpret_mode, next_pow2, runnable, tl, triton
from kernels.rms_norm import rms_norm_torch


# ---- torch reference: the spec, and the CPU path (the model's op sequence) ---------------------------------
def route_torch(r_TH: torch.Tensor, scale_H: torch.Tensor, proj_EH: torch.Tensor, per_expert_E: torch.Tensor,
                top_k: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (topk_idx_Tk long, topk_w_Tk fp32)."""
    z = rms_norm_torch(r_TH, None, eps) * scale_H * r_TH.shape[-1] ** -0.5
    probs = F.softmax(F.linear(z, proj_EH), dim=-1, dtype=torch.float32)
    w, idx = torch.topk(probs, k=top_k, dim=-1)
    w = w / w.sum(dim=-1, keepdim=True)
    return idx, w * per_expert_E[idx]


# ---- Triton kernels ----------------------------------------------------------------------------------------
@triton.jit
def _router_norm_kernel(x_ptr, s_ptr, z_ptr, D, eps, root, ROUND: tl.constexpr, BD: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BD)
    ok = cols < D
    x = tl.load(x_ptr + row * D + cols, mask=ok, other=0.0).to(tl.float32)
    y = x * (1.0 / tl.sqrt(tl.sum(x * x, axis=0) / D + eps))
    if ROUND:  # torch rounds after the norm and after each product
        y = y.to(z_ptr.dtype.element_ty).to(tl.float32)
    y = y * tl.load(s_ptr + cols, mask=ok, other=0.0).to(tl.float32)
    if ROUND:
        y = y.to(z_ptr.dtype.element_ty).to(tl.float32)
    tl.store(z_ptr + row * D + cols, (y * root).to(z_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _router_topk_kernel(logit_ptr, pes_ptr, idx_ptr, w_ptr, T, E, K: tl.constexpr, KP: tl.constexpr,
                        BT: tl.constexpr, EP: tl.constexpr):
    rows = tl.program_id(0) * BT + tl.arange(0, BT)
    row_ok = rows < T
    es = tl.arange(0, EP)
    m2 = row_ok[:, None] & (es < E)[None, :]
    x = tl.load(logit_ptr + rows.to(tl.int64)[:, None] * E + es[None, :], mask=m2, other=0.0)
    x = tl.where((es < E)[None, :], x.to(tl.float32), float("-inf"))  # rows past T stay finite (never stored)
    p = tl.exp(x - tl.max(x, axis=1)[:, None])
    p = p / tl.sum(p, axis=1)[:, None]
    p = tl.where(m2, p, -1.0)  # padding columns never win a round
    ks = tl.arange(0, KP)
    wk = tl.zeros((BT, KP), tl.float32)
    ik = tl.zeros((BT, KP), tl.int32)
    for j in tl.static_range(K):  # round j: the largest remaining probability (lowest index on ties)
        v = tl.max(p, axis=1)
        i = tl.min(tl.where(p == v[:, None], es[None, :], EP), axis=1)
        wk = tl.where(ks[None, :] == j, v[:, None], wk)
        ik = tl.where(ks[None, :] == j, i[:, None], ik)
        p = tl.where(es[None, :] == i[:, None], -1.0, p)
    ok = row_ok[:, None] & (ks < K)[None, :]
    pes = tl.load(pes_ptr + ik, mask=ok, other=0.0).to(tl.float32)
    offs = rows.to(tl.int64)[:, None] * K + ks[None, :]
    tl.store(w_ptr + offs, wk / tl.sum(wk, axis=1)[:, None] * pes, mask=ok)
    tl.store(idx_ptr + offs, ik.to(tl.int64), mask=ok)


def route_triton(r_TH: torch.Tensor, scale_H: torch.Tensor, proj_EH: torch.Tensor, per_expert_E: torch.Tensor,
                 top_k: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `route_torch`: norm kernel, the GEMM, top-k kernel."""
    T, H = r_TH.shape
    E = proj_EH.shape[0]
    x = r_TH.contiguous()
    z = torch.empty_like(x)
    idx = torch.empty(T, top_k, dtype=torch.long, device=x.device)
    w = torch.empty(T, top_k, dtype=torch.float32, device=x.device)
    if T == 0:
        return idx, w
    bd = next_pow2(H)
    runnable(_router_norm_kernel)[(T,)](x, scale_H, z, H, float(eps), float(H ** -0.5),
                                        ROUND=x.dtype != torch.float32 and not interpret_mode(), BD=bd,
                                        num_warps=min(16, max(1, bd // 256)))
    logits = F.linear(z, proj_EH).contiguous()
    bt = 16
    runnable(_router_topk_kernel)[(triton.cdiv(T, bt),)](logits, per_expert_E, idx, w, T, E, K=top_k,
                                                         KP=next_pow2(top_k), BT=bt, EP=next_pow2(E))
    return idx, w


def selfcheck(device: torch.device) -> bool:
    """One-time kernel-vs-reference comparison on `device` (fp32, no ties): same experts, close weights."""
    g = torch.Generator(device="cpu").manual_seed(0)
    T, H, E, k = 37, 96, 24, 5
    r = torch.randn(T, H, generator=g).to(device)
    s, pes = (torch.rand(H, generator=g) + 0.5).to(device), (torch.rand(E, generator=g) + 0.5).to(device)
    proj = torch.randn(E, H, generator=g).to(device)
    i_ref, w_ref = route_torch(r, s, proj, pes, k, 1e-6)
    i_got, w_got = route_triton(r, s, proj, pes, k, 1e-6)
    return bool(torch.equal(i_ref, i_got) and torch.allclose(w_ref, w_got, atol=1e-5, rtol=1e-5))
