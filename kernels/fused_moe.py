"""Routed-expert MLP: torch reference, a PyTorch grouped-GEMM form, Triton grouped GEMMs, launcher. Reference
model: `DiffusionGemmaTextExperts` in https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/models/diffusion_gemma/modeling_diffusion_gemma.py

The expert weights are dense tensors here; kernels/quant_moe.py runs the same reference loop and the same
GEMM kernels on quantized ones (`QuantTensor`, kernels/dequant.py): the kernels take the weight's format as
constexprs (SCHEME "dense", or a quantized scheme whose tiles kernels/quant_linear.py's `dequant_tile`
dequantizes in registers), so routing, block setup, epilogue and combine are written once.

y_TH = sum over j in top-k order of w_Tk[:, j] * down[e_j](gelu_tanh(gate[e_j] x) * up[e_j] x), with each
expert output in x's dtype, weighted and summed in fp32, cast once (HF's grouped_mm precision).

Triton path (no host sync, so it can sit inside a CUDA graph):
1. align (kernels/moe_align.py, three launches): assignments a = t*k + j are sorted by expert and each
   expert's list padded to BLOCK_M, giving sorted_ids (padding = T*k, an invalid id) and one expert id per
   block; the grid is the static upper bound cdiv(T*k, BLOCK_M) + E blocks and blocks past the real count
   exit at once (experts with zero tokens own no block). Each GEMM program reads its block back with
   moe_align's `block_rows`.
2. gate_up GEMM per block with two accumulators (gate rows n, up rows Im + n) and GELU-tanh * up fused in
   the epilogue -> h_AI (x dtype, indexed by assignment).
3. down GEMM per block -> y_AH (x dtype, by assignment).
4. combine: y_TH[t] = sum_j w[t, j] * y_AH[t*k + j] in fp32, in top-k order.
At one canvas (256 tokens x 8 / 128 experts: 16 rows per expert on average) the step streams every expert's
weights; an expert with more than BLOCK_M rows owns several blocks, each reading its weights again (from L2
when the blocks run together), so BLOCK_M is a tuning choice that bench/gpu.py sweeps.

Legend: T tokens, H hidden, E experts, k top-k, F = 2*I gate+up rows, I expert width (Im), A = T*k
assignments, M rows of a block.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from kernels._triton_compat import HAS_TRITON, interpret_mode, runnable, tl, triton
from kernels._triton_math import dot_acc, gelu_tanh_mul_f32
from kernels.dequant import QuantTensor
from kernels.gelu_mul import gelu_mul_triton
from kernels.moe_align import align_tokens_triton, block_rows
from kernels.quant_linear import block_k_for, dequant_tile, tile_args, weight_ptrs


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.gelu(x, approximate="tanh")


# ---- torch reference: the spec, and the CPU path ----------------------------------------------------------
def fused_moe_torch(x_TH: torch.Tensor, topk_idx_Tk: torch.Tensor, topk_w_Tk: torch.Tensor,
                    gate_up_EFH: torch.Tensor, down_EHI: torch.Tensor) -> torch.Tensor:
    """Loops over experts that received tokens; differentiable (used for training on CPU)."""
    return experts_torch(x_TH, topk_idx_Tk, topk_w_Tk, gate_up_EFH.shape[0],
                         lambda e: (gate_up_EFH[e], down_EHI[e]))


def experts_torch(x_TH: torch.Tensor, topk_idx_Tk: torch.Tensor, topk_w_Tk: torch.Tensor, num_experts: int,
                  weights_of: Callable[[int], tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The reference loop over experts that received tokens; `weights_of(e)` gives expert e's gate_up [2I, H]
    and down [H, I] matrices, asked only for those experts and one expert at a time (a quantized model then
    never holds a dense copy of all its experts)."""
    T, H = x_TH.shape
    k = topk_idx_Tk.shape[1]
    flat_A = topk_idx_Tk.reshape(-1)
    order_A = torch.argsort(flat_A, stable=True)
    counts = torch.bincount(flat_A, minlength=num_experts).tolist()
    y_AH = x_TH.new_zeros(T * k, H)
    start = 0
    for e, n in enumerate(counts):
        if n == 0:
            continue
        a = order_A[start:start + n]
        start += n
        gate_up_FH, down_HI = weights_of(e)
        I = down_HI.shape[1]  # noqa: E741
        gu = x_TH[a // k] @ gate_up_FH.t()
        y_AH = y_AH.index_put((a,), (gelu_tanh(gu[:, :I]) * gu[:, I:]) @ down_HI.t())
    return combine_torch(y_AH, topk_w_Tk).to(x_TH.dtype)


def combine_torch(y_AH: torch.Tensor, topk_w_Tk: torch.Tensor) -> torch.Tensor:
    """fp32 sum over j of w[t, j] * y_AH[t*k + j], in top-k order (the reference's grouped_mm path)."""
    T, k = topk_w_Tk.shape
    y_TkH = y_AH.view(T, k, -1)
    acc = torch.zeros(T, y_AH.shape[1], dtype=torch.float32, device=y_AH.device)
    for j in range(k):
        acc = acc + topk_w_Tk[:, j, None].float() * y_TkH[:, j].float()
    return acc


# ---- the same op through PyTorch's grouped GEMM: a GPU candidate, measured beside the Triton GEMMs ---------
def _grouped_mm(a_MK: torch.Tensor, b_EKN: torch.Tensor, offs_E: torch.Tensor) -> torch.Tensor:
    gmm = getattr(torch.nn.functional, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)
    if gmm is None:
        raise RuntimeError(f"fused_moe_grouped: torch {torch.__version__} has no grouped GEMM "
                           "(torch.nn.functional.grouped_mm or torch._grouped_mm)")
    return gmm(a_MK, b_EKN, offs=offs_E)


def fused_moe_grouped(x_TH: torch.Tensor, topk_idx_Tk: torch.Tensor, topk_w_Tk: torch.Tensor,
                      gate_up_EFH: torch.Tensor, down_EHI: torch.Tensor) -> torch.Tensor:
    """Same contract through `grouped_mm` (CUTLASS grouped GEMMs on sm80+ GPUs; a loop over experts on the
    CPU): assignments sorted by expert with no padding and no host read (sort + searchsorted give the group
    ends), one grouped call per projection, each expert output in x's dtype, then the fp32 top-k combine.
    On CUDA (and in Triton's interpreter) the gated GELU (kernels/gelu_mul.py, reading the two halves of the
    gate+up output in place) and the combine (reading each row where the grouped GEMM left it) run as Triton
    kernels, so no [A, 2I] or [A, H] copy is made. Not dispatched yet:
    bench/gpu.py measures it against the Triton GEMMs (CUTLASS's tuned kernels against our untuned tiles)."""
    check_moe_args(x_TH, topk_idx_Tk, topk_w_Tk, gate_up_EFH, down_EHI)
    T, H = x_TH.shape
    k = topk_idx_Tk.shape[1]
    E, _, I = down_EHI.shape  # noqa: E741
    A = T * k
    if T == 0:
        return torch.empty_like(x_TH)
    e_sorted_A, order_A = torch.sort(topk_idx_Tk.reshape(-1), stable=True)
    experts_E = torch.arange(E, device=x_TH.device, dtype=e_sorted_A.dtype)
    offs_E = torch.searchsorted(e_sorted_A, experts_E, right=True).to(torch.int32)  # end of each group
    x_AH = x_TH.index_select(0, order_A // k)  # rows grouped by expert, token order within a group
    gu_AF = _grouped_mm(x_AH, gate_up_EFH.transpose(1, 2), offs_E)
    fused = HAS_TRITON and (x_TH.is_cuda or interpret_mode())  # the Triton kernels wherever they run
    g_AI, u_AI = gu_AF[:, :I], gu_AF[:, I:]
    h_AI = gelu_mul_triton(g_AI, u_AI) if fused else gelu_tanh(g_AI) * u_AI
    y_sorted_AH = _grouped_mm(h_AI, down_EHI.transpose(1, 2), offs_E)
    if not fused:
        y_AH = torch.empty_like(y_sorted_AH).index_copy_(0, order_A, y_sorted_AH)  # back to assignment order
        return combine_torch(y_AH, topk_w_Tk).to(x_TH.dtype)
    # the combine reads each assignment's row where the GEMM left it (no [A, H] permutation copy)
    where_A = torch.empty_like(order_A).scatter_(0, order_A, torch.arange(A, device=x_TH.device))
    return _combine(y_sorted_AH, topk_w_Tk, torch.empty_like(x_TH), where_A)


# ---- Triton kernels ----------------------------------------------------------------------------------------
# Both GEMMs read expert e's weight through four pointers and five strides (`_weight_args`): a quantized
# weight (kernels/quant_moe.py) passes its data, scale, zero points and global scale, a dense one itself four
# times (only data_ptr, sd_e and sd_n are read). SCHEME is a constexpr, so each format compiles to its own
# kernel with the other branch removed: the dense kernel loads its [BK, BN] tile as it always did.
@triton.jit
def _gate_up_kernel(x_ptr, data_ptr, scale_ptr, zero_ptr, gscale_ptr, h_ptr, ids_ptr, bexp_ptr, nblk_ptr,
                    A, TOPK, H, I, sx_t, sd_e, sd_n, ss_e, ss_n, sg_e, sh_a,  # noqa: E741
                    SCHEME: tl.constexpr, GROUP: tl.constexpr, GMODE: tl.constexpr, HAS_ZERO: tl.constexpr,
                    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, UPCAST: tl.constexpr,
                    IEEE: tl.constexpr):
    pid_m = tl.program_id(0)
    if pid_m >= tl.load(nblk_ptr):
        return
    pid_n = tl.program_id(1)
    e, rows, row_ok, tok = block_rows(ids_ptr, bexp_ptr, pid_m, A, TOPK, BM)  # tok: the x row of each
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
        if SCHEME == "dense":  # gate rows n, up rows I + n
            wm = k_ok[:, None] & n_ok[None, :]
            wg = tl.load(d_e + ns[None, :] * sd_n + (k0 + ks)[:, None], mask=wm, other=0.0)
            wu = tl.load(d_e + (ns + I)[None, :] * sd_n + (k0 + ks)[:, None], mask=wm, other=0.0)
        else:
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
def _down_kernel(h_ptr, data_ptr, scale_ptr, zero_ptr, gscale_ptr, y_ptr, ids_ptr, bexp_ptr, nblk_ptr,
                 A, H, I, sh_a, sd_e, sd_n, ss_e, ss_n, sg_e, sy_a,  # noqa: E741
                 SCHEME: tl.constexpr, GROUP: tl.constexpr, GMODE: tl.constexpr, HAS_ZERO: tl.constexpr,
                 BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, UPCAST: tl.constexpr,
                 IEEE: tl.constexpr):
    pid_m = tl.program_id(0)
    if pid_m >= tl.load(nblk_ptr):
        return
    pid_n = tl.program_id(1)
    e, _, row_ok, r64 = block_rows(ids_ptr, bexp_ptr, pid_m, A, 1, BM)  # r64: the h and y row of each
    ns = pid_n * BN + tl.arange(0, BN)
    n_ok = ns < H
    ks = tl.arange(0, BK)
    d_e, s_e, z_e, g_e = data_ptr + e * sd_e, scale_ptr + e * ss_e, zero_ptr + e * ss_e, gscale_ptr + e * sg_e
    acc = tl.zeros((BM, BN), tl.float32)
    for k0 in range(0, I, BK):
        k_ok = (k0 + ks) < I
        a = tl.load(h_ptr + r64[:, None] * sh_a + (k0 + ks)[None, :], mask=row_ok[:, None] & k_ok[None, :],
                    other=0.0)
        if SCHEME == "dense":
            w = tl.load(d_e + ns[None, :] * sd_n + (k0 + ks)[:, None], mask=k_ok[:, None] & n_ok[None, :],
                        other=0.0)
        else:
            w = tl.trans(dequant_tile(d_e, s_e, z_e, g_e, pid_n * BN, H, k0, I, sd_n, ss_n,
                                      h_ptr.dtype.element_ty, SCHEME, GROUP, GMODE, HAS_ZERO, BN, BK))
        acc = dot_acc(a, w, acc, UPCAST, IEEE)
    tl.store(y_ptr + r64[:, None] * sy_a + ns[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=row_ok[:, None] & n_ok[None, :])


@triton.jit
def _combine_kernel(y_ptr, w_ptr, out_ptr, rows_ptr, H, TOPK: tl.constexpr, BH: tl.constexpr,
                    HAS_ROWS: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    hs = tl.program_id(1) * BH + tl.arange(0, BH)
    ok = hs < H
    acc = tl.zeros((BH,), tl.float32)
    for j in tl.static_range(TOPK):  # top-k order, fp32
        w = tl.load(w_ptr + t * TOPK + j).to(tl.float32)
        r = t * TOPK + j
        if HAS_ROWS:  # assignment r's output row (the grouped GEMM leaves them sorted by expert)
            r = tl.load(rows_ptr + r).to(tl.int64)
        acc += w * tl.load(y_ptr + r * H + hs, mask=ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + t * H + hs, acc.to(out_ptr.dtype.element_ty), mask=ok)


def _combine(y_RH: torch.Tensor, topk_w_Tk: torch.Tensor, out_TH: torch.Tensor,
             rows_A: torch.Tensor | None = None) -> torch.Tensor:
    """out[t] = sum_j w[t, j] * y[rows[t*k + j]] in fp32 (rows None: the identity), one launch."""
    T, k = topk_w_Tk.shape
    H = out_TH.shape[1]
    bh = min(1024, 1 << max(4, (H - 1).bit_length()))
    runnable(_combine_kernel)[(T, triton.cdiv(H, bh))](
        y_RH, topk_w_Tk.float().contiguous(), out_TH, rows_A if rows_A is not None else topk_w_Tk, H, TOPK=k,
        BH=bh, HAS_ROWS=rows_A is not None)
    return out_TH


_DENSE = {"SCHEME": "dense", "GROUP": 1, "GMODE": 0, "HAS_ZERO": False}


def _weight_args(w: torch.Tensor | QuantTensor, block_k: int) -> tuple[tuple, tuple, dict]:
    """An expert weight [E, N, K]'s GEMM arguments at tiles up to block_k wide: pointers (data, scale, zero,
    global scale), strides (data's expert and row, scale's expert and row, global scale's expert) and
    constexprs (the format, BK; a quantized weight's BK is narrowed as kernels/quant_linear.py `block_k_for`
    says)."""
    if not isinstance(w, QuantTensor):
        w = w.contiguous()
        return (w, w, w, w), (w.stride(0), w.stride(1), 0, 0, 0), _DENSE | {"BK": block_k}
    bk = block_k_for(w, block_k)
    data, scale, zero, gscale = weight_ptrs(w)
    return ((data, scale, zero, gscale),
            (data.stride(0), data.stride(1), scale.stride(0), scale.stride(1), gscale.stride(0)),
            tile_args(w, bk) | {"BK": bk})


def fused_moe_triton(x_TH: torch.Tensor, topk_idx_Tk: torch.Tensor, topk_w_Tk: torch.Tensor,
                     gate_up_EFH: torch.Tensor, down_EHI: torch.Tensor, *, block_m: int | None = None,
                     block_n: int = 64, block_k: int = 64, num_warps: int = 4,
                     num_stages: int | None = None,
                     down_tile: tuple[int, int, int, int | None] | None = None) -> torch.Tensor:
    """Triton launcher with the same contract as `fused_moe_torch`. Tile sizes, warps and pipeline stages
    are arguments so bench/gpu.py can sweep them at real shapes (None stages: Triton's default).
    down_tile = (block_n, block_k, num_warps, num_stages) of the down GEMM where it differs from gate_up's:
    the two have transposed shapes (gate_up reads K = H = 2816 for 2 x 704 outputs, down K = 704 for 2816),
    so one tile need not suit both; block_m is shared because both walk the same aligned blocks."""
    check_moe_args(x_TH, topk_idx_Tk, topk_w_Tk, gate_up_EFH, down_EHI)
    return experts_triton(x_TH, topk_idx_Tk, topk_w_Tk, gate_up_EFH, down_EHI, block_m,
                          (block_n, block_k, num_warps, num_stages), down_tile)


def experts_triton(x_TH: torch.Tensor, topk_idx_Tk: torch.Tensor, topk_w_Tk: torch.Tensor,
                   gate_up: torch.Tensor | QuantTensor, down: torch.Tensor | QuantTensor, block_m: int | None,
                   tile: tuple[int, int, int, int | None],
                   down_tile: tuple[int, int, int, int | None] | None) -> torch.Tensor:
    """The launches behind `fused_moe_triton` and kernels/quant_moe.py's `quant_moe_triton`, arguments
    checked by them: align, gate_up GEMM, down GEMM, combine. tile = (block_n, block_k, num_warps,
    num_stages) of the gate_up GEMM, down_tile the down GEMM's (None: the same)."""
    if down_tile is not None and (len(down_tile) != 4 or min(down_tile[:3]) < 1):
        raise ValueError(f"fused_moe: down_tile must be (block_n, block_k, num_warps, num_stages), got "
                         f"{down_tile}")
    T, H = x_TH.shape
    k = topk_idx_Tk.shape[1]
    E, _, I = down.shape  # noqa: E741
    out = torch.empty_like(x_TH)
    if T == 0:
        return out
    A = T * k
    x_TH = x_TH.contiguous()
    if block_m is None:  # rows per expert block: small batches waste less padding with 16
        block_m = 16 if A / E <= 24 else (32 if A / E <= 48 else 64)
    layout = align_tokens_triton(topk_idx_Tk, E, block_m)  # sorted_ids, block_expert, num_blocks
    G = layout[1].numel()
    h_AI = torch.empty(A, I, dtype=x_TH.dtype, device=x_TH.device)
    y_AH = torch.empty(A, H, dtype=x_TH.dtype, device=x_TH.device)
    fp32 = x_TH.dtype == torch.float32
    precision = {"UPCAST": interpret_mode() or fp32, "IEEE": fp32}
    bn, bk, warps, stages = tile
    ptrs, strides, fmt = _weight_args(gate_up, bk)
    runnable(_gate_up_kernel)[(G, triton.cdiv(I, bn))](
        x_TH, *ptrs, h_AI, *layout, A, k, H, I, x_TH.stride(0), *strides, h_AI.stride(0),
        BM=block_m, BN=bn, **fmt, **precision, **_launch_args(warps, stages))
    bn, bk, warps, stages = down_tile or tile
    ptrs, strides, fmt = _weight_args(down, bk)
    runnable(_down_kernel)[(G, triton.cdiv(H, bn))](
        h_AI, *ptrs, y_AH, *layout, A, H, I, h_AI.stride(0), *strides, y_AH.stride(0),
        BM=block_m, BN=bn, **fmt, **precision, **_launch_args(warps, stages))
    return _combine(y_AH, topk_w_Tk, out)


def _launch_args(num_warps: int, num_stages: int | None) -> dict:
    return {"num_warps": num_warps} | ({"num_stages": num_stages} if num_stages else {})


def check_moe_args(x_TH, topk_idx_Tk, topk_w_Tk, gate_up_EFH, down_EHI) -> None:
    """Shape/dtype contract shared by both backends; raises ValueError naming the bad argument."""
    if x_TH.dim() != 2 or gate_up_EFH.dim() != 3 or down_EHI.dim() != 3:
        raise ValueError(f"fused_moe: want x_TH 2-D, gate_up_EFH and down_EHI 3-D; got {tuple(x_TH.shape)}, "
                         f"{tuple(gate_up_EFH.shape)}, {tuple(down_EHI.shape)}")
    check_routing("fused_moe", x_TH, topk_idx_Tk, topk_w_Tk, gate_up_EFH.shape, down_EHI.shape,
                  names=("gate_up_EFH", "down_EHI"))
    if gate_up_EFH.dtype != x_TH.dtype or down_EHI.dtype != x_TH.dtype:
        raise ValueError(f"fused_moe: weight dtypes {gate_up_EFH.dtype}/{down_EHI.dtype} != x {x_TH.dtype}")


def check_routing(op: str, x_TH: torch.Tensor, topk_idx_Tk: torch.Tensor, topk_w_Tk: torch.Tensor,
                  gate_up_shape: tuple[int, ...], down_shape: tuple[int, ...],
                  names: tuple[str, str] = ("gate_up", "down")) -> None:
    """What every routed-expert op asks of a 2-D x [T, H] (its caller checks the 2-D), the logical shapes of
    its two weights ([E, 2I, H] and [E, H, I], called `names` in messages) and the routing: top-k ids and
    weights both [T, k], ids int32/int64. Raises ValueError naming `op` and the bad argument."""
    T, H = x_TH.shape
    E, F, H2 = gate_up_shape
    if H2 != H or F % 2 or tuple(down_shape) != (E, H, F // 2):
        raise ValueError(f"{op}: {names[0]} {list(gate_up_shape)} / {names[1]} {list(down_shape)} do not fit "
                         f"hidden {H} (want [E, 2I, H] and [E, H, I])")
    if topk_idx_Tk.dim() != 2 or topk_idx_Tk.shape[0] != T or topk_w_Tk.shape != topk_idx_Tk.shape:
        raise ValueError(f"{op}: topk_idx_Tk {tuple(topk_idx_Tk.shape)} and topk_w_Tk "
                         f"{tuple(topk_w_Tk.shape)} must both be [{T}, k]")
    if topk_idx_Tk.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{op}: topk_idx_Tk must be int32/int64, got {topk_idx_Tk.dtype}")


SELFCHECK_SHAPE = (37, 96, 6, 2, 40)  # T, H, E, k, I: odd sizes, not multiples of any tile


def selfcheck_routing(device: torch.device) -> tuple[torch.Generator, torch.Tensor, torch.Tensor,
                                                     torch.Tensor]:
    """The self-checks' inputs at SELFCHECK_SHAPE: (the generator to draw weights from, x [T, H] bf16, top-k
    ids with the last expert given no token, their weights)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    T, H, E, k, _ = SELFCHECK_SHAPE
    x = torch.randn(T, H, generator=g).to(device, torch.bfloat16)
    idx = torch.stack([torch.randperm(E - 1, generator=g)[:k] for _ in range(T)]).to(device)
    return g, x, idx, torch.rand(T, k, generator=g).to(device)


def selfcheck(device: torch.device) -> bool:
    """One-time kernel-vs-reference comparison on `device` in bf16 at SELFCHECK_SHAPE."""
    g, x, idx, w = selfcheck_routing(device)
    _, H, E, _, I = SELFCHECK_SHAPE  # noqa: E741
    wgu = (torch.randn(E, 2 * I, H, generator=g) / math.sqrt(H)).to(device, torch.bfloat16)
    wd = (torch.randn(E, H, I, generator=g) / math.sqrt(I)).to(device, torch.bfloat16)
    ref = fused_moe_torch(x.float(), idx, w, wgu.float(), wd.float())
    out = fused_moe_triton(x, idx, w, wgu, wd).float()
    return bool(((out - ref).abs().max() <= 0.05 * ref.abs().max() + 1e-3).item())
