"""Routed-expert MLP with quantized expert weights: torch reference (one expert dequantized at a time) and
Triton grouped GEMMs that dequantize the expert weight tiles in registers.

y_TH = sum over j in top-k order of w_Tk[:, j] * down[e_j](gelu_tanh(gate[e_j] x) * up[e_j] x), gate_up a
`QuantTensor` [E, 2I, H] (gate rows then up rows), down [E, H, I] (layout: kernels/dequant.py). The contract
and precision are kernels/fused_moe.py's `fused_moe_torch` with w = dequantize(w) (each weight value rounded
as kernels/dequant.py rounds it, then cast to x's dtype).

Torch reference (also the CPU path): fused_moe_torch's loop over experts that received tokens, dequantizing
only those experts, one at a time, so a quantized model never holds a dense copy of all its experts.

Triton path: the structure of `fused_moe_triton`, reusing its pieces by import: the align kernels of
kernels/moe_align.py, then a gate_up GEMM per aligned block (two accumulators, GELU-tanh * up in the epilogue)
and a down GEMM whose K loops dequantize the expert's packed tile with kernels/quant_linear.py's
`dequant_tile`, then fused_moe.py's fp32 top-k combine.

Legend: T tokens, H hidden, E experts, k top-k, I expert width, F = 2I gate+up rows, A = T*k assignments,
M rows of a block; BN x BK weight tile.
"""

from __future__ import annotations

import torch

from kernels._triton_compat import interpret_mode, runnable, tl, triton
from kernels._triton_math import dot_acc, gelu_tanh_mul_f32
from kernels.dequant import QuantTensor, dequantize
from kernels.fused_moe import _combine, combine_torch, gelu_tanh
from kernels.moe_align import align_tokens_triton
from kernels.quant_linear import block_k_for, dequant_tile, random_quant_weights, tile_args, weight_ptrs


# ---- torch reference: the spec, and the CPU path ----------------------------------------------------------
def quant_moe_torch(x_TH: torch.Tensor, topk_idx_Tk: torch.Tensor, topk_w_Tk: torch.Tensor,
                    gate_up: QuantTensor, down: QuantTensor) -> torch.Tensor:
    """fused_moe_torch's loop, each expert that received tokens dequantized on its own."""
    T, H = x_TH.shape
    k = topk_idx_Tk.shape[1]
    I = down.k  # noqa: E741
    flat_A = topk_idx_Tk.reshape(-1)
    order_A = torch.argsort(flat_A, stable=True)
    counts = torch.bincount(flat_A, minlength=gate_up.data.shape[0]).tolist()
    y_AH = x_TH.new_zeros(T * k, H)
    start = 0
    for e, n in enumerate(counts):
        if n == 0:
            continue
        a = order_A[start:start + n]
        start += n
        gu = x_TH[a // k] @ dequantize(gate_up.expert(e), x_TH.dtype).t()
        h = gelu_tanh(gu[:, :I]) * gu[:, I:]
        y_AH = y_AH.index_put((a,), h @ dequantize(down.expert(e), x_TH.dtype).t())
    return combine_torch(y_AH, topk_w_Tk).to(x_TH.dtype)


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
    T, H = x_TH.shape
    E, F, H2 = gate_up.shape
    if H2 != H or F % 2 or tuple(down.shape) != (E, H, F // 2):
        raise ValueError(f"quant_moe: gate_up {list(gate_up.shape)} / down {list(down.shape)} do not fit "
                         f"hidden {H} (want [E, 2I, H] and [E, H, I])")
    if topk_idx_Tk.dim() != 2 or topk_idx_Tk.shape[0] != T or topk_w_Tk.shape != topk_idx_Tk.shape:
        raise ValueError(f"quant_moe: topk_idx_Tk {tuple(topk_idx_Tk.shape)} and topk_w_Tk "
                         f"{tuple(topk_w_Tk.shape)} must both be [{T}, k]")
    if topk_idx_Tk.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"quant_moe: topk_idx_Tk must be int32/int64, got {topk_idx_Tk.dtype}")
    for name, w in (("gate_up", gate_up), ("down", down)):
        if w.data.device != x_TH.device:
            raise ValueError(f"quant_moe: {name}.data is on {w.data.device}, x_TH on {x_TH.device}")


# ---- Triton kernels ----------------------------------------------------------------------------------------
@triton.jit
def _quant_gate_up_kernel(x_ptr, data_ptr, scale_ptr, zero_ptr, gscale_ptr, h_ptr, ids_ptr, bexp_ptr,
                          nblk_ptr, A, TOPK, H, I, sx_t, sd_e, sd_n, ss_e, ss_n, sg_e, sh_a,  # noqa: E741
                          SCHEME: tl.constexpr, GROUP: tl.constexpr, GMODE: tl.constexpr,
                          HAS_ZERO: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                          UPCAST: tl.constexpr, IEEE: tl.constexpr):
    pid_m = tl.program_id(0)
    if pid_m >= tl.load(nblk_ptr):
        return
    pid_n = tl.program_id(1)
    e = tl.load(bexp_ptr + pid_m).to(tl.int64)
    rows = tl.load(ids_ptr + pid_m * BM + tl.arange(0, BM))
    row_ok = rows < A
    tok = tl.where(row_ok, rows // TOPK, 0).to(tl.int64)
    ns = pid_n * BN + tl.arange(0, BN)
    n_ok = ns < I
    ks = tl.arange(0, BK)
    # expert e's weight: zero points share the scale's strides (same shape, both contiguous)
    d_e, s_e, z_e, g_e = data_ptr + e * sd_e, scale_ptr + e * ss_e, zero_ptr + e * ss_e, gscale_ptr + e * sg_e
    acc_g = tl.zeros((BM, BN), tl.float32)
    acc_u = tl.zeros((BM, BN), tl.float32)
    for k0 in range(0, H, BK):
        k_ok = (k0 + ks) < H
        a = tl.load(x_ptr + tok[:, None] * sx_t + (k0 + ks)[None, :], mask=row_ok[:, None] & k_ok[None, :],
                    other=0.0)
        wg = tl.trans(dequant_tile(d_e, s_e, z_e, g_e, pid_n * BN, I, k0, H, sd_n, ss_n,
                                   x_ptr.dtype.element_ty, SCHEME, GROUP, GMODE, HAS_ZERO, BN, BK))
        wu = tl.trans(dequant_tile(d_e, s_e, z_e, g_e, I + pid_n * BN, 2 * I, k0, H, sd_n, ss_n,
                                   x_ptr.dtype.element_ty, SCHEME, GROUP, GMODE, HAS_ZERO, BN, BK))
        acc_g = dot_acc(a, wg, acc_g, UPCAST, IEEE)
        acc_u = dot_acc(a, wu, acc_u, UPCAST, IEEE)
    act = gelu_tanh_mul_f32(acc_g, acc_u)
    tl.store(h_ptr + rows.to(tl.int64)[:, None] * sh_a + ns[None, :], act.to(h_ptr.dtype.element_ty),
             mask=row_ok[:, None] & n_ok[None, :])


@triton.jit
def _quant_down_kernel(h_ptr, data_ptr, scale_ptr, zero_ptr, gscale_ptr, y_ptr, ids_ptr, bexp_ptr, nblk_ptr,
                       A, H, I, sh_a, sd_e, sd_n, ss_e, ss_n, sg_e, sy_a,  # noqa: E741
                       SCHEME: tl.constexpr, GROUP: tl.constexpr, GMODE: tl.constexpr, HAS_ZERO: tl.constexpr,
                       BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, UPCAST: tl.constexpr,
                       IEEE: tl.constexpr):
    pid_m = tl.program_id(0)
    if pid_m >= tl.load(nblk_ptr):
        return
    pid_n = tl.program_id(1)
    e = tl.load(bexp_ptr + pid_m).to(tl.int64)
    rows = tl.load(ids_ptr + pid_m * BM + tl.arange(0, BM))
    row_ok = rows < A
    r64 = tl.where(row_ok, rows, 0).to(tl.int64)
    ns = pid_n * BN + tl.arange(0, BN)
    n_ok = ns < H
    ks = tl.arange(0, BK)
    d_e, s_e, z_e, g_e = data_ptr + e * sd_e, scale_ptr + e * ss_e, zero_ptr + e * ss_e, gscale_ptr + e * sg_e
    acc = tl.zeros((BM, BN), tl.float32)
    for k0 in range(0, I, BK):
        k_ok = (k0 + ks) < I
        a = tl.load(h_ptr + r64[:, None] * sh_a + (k0 + ks)[None, :], mask=row_ok[:, None] & k_ok[None, :],
                    other=0.0)
        w = tl.trans(dequant_tile(d_e, s_e, z_e, g_e, pid_n * BN, H, k0, I, sd_n, ss_n,
                                  h_ptr.dtype.element_ty, SCHEME, GROUP, GMODE, HAS_ZERO, BN, BK))
        acc = dot_acc(a, w, acc, UPCAST, IEEE)
    tl.store(y_ptr + r64[:, None] * sy_a + ns[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=row_ok[:, None] & n_ok[None, :])


def _weight_args(w: QuantTensor) -> tuple:
    """Pointers then strides (expert, row) of data and scale, and global_scale's expert stride."""
    data, scale, zero, gscale = weight_ptrs(w)
    return (data, scale, zero, gscale), (data.stride(0), data.stride(1), scale.stride(0), scale.stride(1),
                                         gscale.stride(0))


def quant_moe_triton(x_TH: torch.Tensor, topk_idx_Tk: torch.Tensor, topk_w_Tk: torch.Tensor,
                     gate_up: QuantTensor, down: QuantTensor, *, block_m: int | None = None,
                     block_n: int = 64, block_k: int = 64, num_warps: int = 4,
                     num_stages: int | None = None) -> torch.Tensor:
    """Triton launcher with the same contract as `quant_moe_torch` (tiles as `fused_moe_triton`'s; BK is
    narrowed where a weight's K is smaller, see kernels/quant_linear.py `block_k_for`)."""
    check_quant_moe_args(x_TH, topk_idx_Tk, topk_w_Tk, gate_up, down)
    T, H = x_TH.shape
    k = topk_idx_Tk.shape[1]
    E, I = down.data.shape[0], down.k  # noqa: E741
    out = torch.empty_like(x_TH)
    if T == 0:
        return out
    A = T * k
    x_TH = x_TH.contiguous()
    if block_m is None:  # rows per expert block: small batches waste less padding with 16
        block_m = 16 if A / E <= 24 else (32 if A / E <= 48 else 64)
    sorted_ids, block_expert, nblk = align_tokens_triton(topk_idx_Tk, E, block_m)
    G = block_expert.numel()
    launch = {"num_warps": num_warps} | ({"num_stages": num_stages} if num_stages else {})
    h_AI = torch.empty(A, I, dtype=x_TH.dtype, device=x_TH.device)
    y_AH = torch.empty(A, H, dtype=x_TH.dtype, device=x_TH.device)
    fp32 = x_TH.dtype == torch.float32
    precision = {"UPCAST": interpret_mode() or fp32, "IEEE": fp32}
    ptrs, strides = _weight_args(gate_up)
    bk = block_k_for(gate_up, block_k)
    runnable(_quant_gate_up_kernel)[(G, triton.cdiv(I, block_n))](
        x_TH, *ptrs, h_AI, sorted_ids, block_expert, nblk, A, k, H, I, x_TH.stride(0), *strides,
        h_AI.stride(0), BM=block_m, BN=block_n, BK=bk, **tile_args(gate_up, bk), **precision, **launch)
    ptrs, strides = _weight_args(down)
    bk = block_k_for(down, block_k)
    runnable(_quant_down_kernel)[(G, triton.cdiv(H, block_n))](
        h_AI, *ptrs, y_AH, sorted_ids, block_expert, nblk, A, H, I, h_AI.stride(0), *strides, y_AH.stride(0),
        BM=block_m, BN=block_n, BK=bk, **tile_args(down, bk), **precision, **launch)
    return _combine(y_AH, topk_w_Tk, out)


def selfcheck(device: torch.device) -> bool:
    """One-time kernel-vs-reference comparison on `device` in bf16, every scheme, at a small odd shape with
    an expert that gets no token."""
    g = torch.Generator(device="cpu").manual_seed(0)
    T, H, E, k, I = 37, 96, 6, 2, 40  # noqa: E741
    x = torch.randn(T, H, generator=g).to(device, torch.bfloat16)
    idx = torch.stack([torch.randperm(E - 1, generator=g)[:k] for _ in range(T)]).to(device)
    w = torch.rand(T, k, generator=g).to(device)
    ok = True
    for gu, dn in zip(random_quant_weights((E,), 2 * I, H, g, device),
                      random_quant_weights((E,), H, I, g, device)):
        ref = quant_moe_torch(x.float(), idx, w, gu, dn)
        out = quant_moe_triton(x, idx, w, gu, dn).float()
        ok &= bool(((out - ref).abs().max() <= 0.05 * ref.abs().max() + 1e-3).item())
    return ok
