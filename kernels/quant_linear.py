"""Quantized dense linear y = x @ w^T (w a `QuantTensor` [N, K], x [..., K]): torch reference, one Triton GEMM
that dequantizes the weight tile in registers inside its K loop, and that in-register dequantization itself
(`dequant_tile`, also used by kernels/quant_moe.py's expert GEMMs).

The weight layout and the rounding rule are kernels/dequant.py's: each weight value is formed in fp32, rounded
once to the scheme's weight dtype, then cast to x's dtype before the dot (fp32 accumulation, output in x's
dtype). The kernel never makes a dense copy of w: each program reads its packed [BN, BK] tile and the scales
that cover it, every K step.

Per scheme, the tile of packed data is read row-major as stored (K contiguous) and its nibbles are
interleaved back into column order ([BN, BK/8] int32 words for w4a16, and for nvfp4 too where a row is whole
words: on a little-endian device nvfp4's byte order puts column c at the same bits 4 * (c % 8) of word c // 8;
[BN, BK/2] bytes otherwise). Interleaving (not a broadcast over a new axis and a reshape) keeps each thread's
columns contiguous in registers, so a thread's rows, and the scales it reads for them, are few. Group scales
(and w4a16 zero points) are read per tile in one of three ways, chosen on the host from the group size G and
the tile's BK (`group_mode`):
  0  the tile lies inside one group (G a multiple of BK, or one group per row): one [BN, 1] column;
  1  the tile holds BK/G whole groups (G a power of two below BK): [BN, BK/G], broadcast over G columns, so
     nvfp4's scale / global_scale division is done once per group;
  2  any other G (`block_k_for` avoids it where a narrower BK can): one gathered scale per element.

Rounding to bf16 is done with integer arithmetic (round to nearest even on the fp32 bits) because Triton's
interpreter truncates on an fp32 -> bf16 cast; the GPU gets the same bits either way, and the interpreter
tests can then check the rounding rule exactly.

Legend: M rows of x (leading dims flattened), K input columns, N output rows, G columns per scale group,
BM x BN output tile, BK columns per K step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels._triton_compat import interpret_mode, runnable, tl, triton
from kernels._triton_math import dot_acc
from kernels.dequant import NVFP4_GROUP, QuantTensor, dequantize


# ---- torch reference: the spec, and the CPU path ----------------------------------------------------------
def quant_linear_torch(x: torch.Tensor, w: QuantTensor) -> torch.Tensor:
    """F.linear(x, dequantize(w, x.dtype)): the whole weight dequantized, then a dense GEMM."""
    return F.linear(x, dequantize(w, x.dtype))


def check_quant_linear_args(x: torch.Tensor, w: QuantTensor) -> None:
    """Shape/dtype contract shared by both backends; raises ValueError naming the bad argument."""
    if not isinstance(w, QuantTensor) or w.data.dim() != 2:
        got = f"a {w.scheme} QuantTensor of shape {list(w.shape)}" if isinstance(w, QuantTensor) else type(w)
        raise ValueError(f"quant_linear: w must be a 2-D QuantTensor [N, K], got {got}")
    if x.dim() < 1 or x.shape[-1] != w.k:
        raise ValueError(f"quant_linear: x {tuple(x.shape)} must end in w's K = {w.k} (w is [{w.n}, {w.k}])")
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"quant_linear: x must be float32/bfloat16/float16, got {x.dtype}")
    for name in ("data", "scale", "zero", "global_scale"):
        t = getattr(w, name)
        if t is not None and t.device != x.device:
            raise ValueError(f"quant_linear: w.{name} is on {t.device}, x on {x.device}")


# ---- the in-register dequantization (a leaf: it calls only triton.language) ------------------------------
@triton.jit
def dequant_tile(data_ptr, scale_ptr, zero_ptr, gscale_ptr, row0, row_end, k0, K, sd_n, ss_n, out_dtype,
                 SCHEME: tl.constexpr, GROUP: tl.constexpr, GMODE: tl.constexpr, HAS_ZERO: tl.constexpr,
                 BN: tl.constexpr, BK: tl.constexpr):
    """Rows row0 .. row0 + BN of w, columns k0 .. k0 + BK, as a [BN, BK] tile in out_dtype, each value rounded
    as kernels/dequant.py rounds it; 0 past K and at rows >= row_end. Pointers are at the weight's first row
    (an expert's, for MoE weights); zero points share the scale's strides (same shape, both contiguous)."""
    rows_N = row0 + tl.arange(0, BN)
    row_ok_N = rows_N < row_end
    cs_K = k0 + tl.arange(0, BK)
    c_ok = cs_K < K
    r64_N = rows_N.to(tl.int64)
    if SCHEME == "fp8":
        m = row_ok_N[:, None] & c_ok[None, :]
        q_NK = tl.load(data_ptr + r64_N[:, None] * sd_n + cs_K[None, :], mask=m, other=0.0).to(tl.float32)
        s_N = tl.load(scale_ptr + r64_N * ss_n, mask=row_ok_N, other=0.0).to(tl.float32)
        w_NK = q_NK * s_N[:, None]
    else:
        if data_ptr.dtype.element_ty == tl.int32:  # column c at bits 4 * (c % 8) of word c // 8
            wd = k0 // 8 + tl.arange(0, BK // 8)
            m = row_ok_N[:, None] & (wd < (K + 7) // 8)[None, :]
            words = tl.load(data_ptr + r64_N[:, None] * sd_n + wd[None, :], mask=m, other=0)
            # nibble j of a word is column 8 w + j: interleave(A, B) puts A's columns at even places, so
            # the even nibbles (0, 2, 4, 6) come from interleave(interleave(0, 4), interleave(2, 6)), etc.
            n0, n1, n2 = words & 0xF, (words >> 4) & 0xF, (words >> 8) & 0xF
            n3, n4, n5 = (words >> 12) & 0xF, (words >> 16) & 0xF, (words >> 20) & 0xF
            n6, n7 = (words >> 24) & 0xF, (words >> 28) & 0xF
            even = tl.interleave(tl.interleave(n0, n4), tl.interleave(n2, n6))
            code = tl.interleave(even, tl.interleave(tl.interleave(n1, n5), tl.interleave(n3, n7)))
        else:  # nvfp4 bytes: column c in byte c // 2, the low nibble for even c
            by = k0 // 2 + tl.arange(0, BK // 2)
            m = row_ok_N[:, None] & (by < (K + 1) // 2)[None, :]
            b = tl.load(data_ptr + r64_N[:, None] * sd_n + by[None, :], mask=m, other=0).to(tl.int32)
            code = tl.interleave(b & 0xF, (b >> 4) & 0xF)
        if SCHEME == "w4a16":  # stored as q + 8
            q_NK = code.to(tl.float32) - 8.0
        else:  # nvfp4: sign bit 3, e2m1 index bits 0-2
            ex, man = (code >> 1) & 3, code & 1
            # twice the magnitude, exactly: 0, 1 (subnormal), then (2 + man) << (ex - 1) = 2, 3, 4, 6, 8, 12
            twice = tl.where(ex == 0, man, (2 + man) << tl.maximum(ex - 1, 0))
            q_NK = tl.where(code >= 8, -0.5, 0.5) * twice.to(tl.float32)
        if GMODE == 2:  # any group size: one scale per element
            g = cs_K[None, :] // GROUP
        else:  # the tile's NG = BK / G groups (mode 1), or its one group
            g = (k0 // GROUP + tl.arange(0, BK // GROUP if GMODE == 1 else 1))[None, :]
        gm = row_ok_N[:, None] & (g * GROUP < K)
        s_off = r64_N[:, None] * ss_n + g
        s = tl.load(scale_ptr + s_off, mask=gm, other=0.0).to(tl.float32)
        if SCHEME == "nvfp4":  # the fp32 division of the reference, correctly rounded (not div.full)
            s = tl.math.div_rn(s, tl.load(gscale_ptr + r64_N, mask=row_ok_N, other=1.0)[:, None])
        if HAS_ZERO:
            z = tl.load(zero_ptr + s_off, mask=gm, other=0).to(tl.float32)
        if GMODE == 1:  # each group's entry over its G columns ([BN, 1] broadcasts by itself)
            s = tl.reshape(tl.broadcast_to(s[:, :, None], (BN, BK // GROUP, GROUP)), (BN, BK))
            if HAS_ZERO:
                z = tl.reshape(tl.broadcast_to(z[:, :, None], (BN, BK // GROUP, GROUP)), (BN, BK))
        if HAS_ZERO:
            q_NK = q_NK - z
        w_NK = q_NK * s
    # round once to the weight dtype (scale's, bf16 for nvfp4), then to out_dtype
    if SCHEME == "nvfp4" or scale_ptr.dtype.element_ty == tl.bfloat16:
        u = w_NK.to(tl.uint32, bitcast=True)
        w_NK = ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).to(tl.float32, bitcast=True)
    else:
        w_NK = w_NK.to(scale_ptr.dtype.element_ty).to(tl.float32)
    w_NK = tl.where(row_ok_N[:, None] & c_ok[None, :], w_NK, 0.0)
    if out_dtype == tl.bfloat16:
        u = w_NK.to(tl.uint32, bitcast=True)
        w_NK = ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).to(tl.float32, bitcast=True)
    return w_NK.to(out_dtype)


def group_mode(w: QuantTensor, block_k: int) -> int:
    """How `dequant_tile` reads w's group scales for a BK-column tile (see the module docstring)."""
    if w.scheme == "fp8" or w.group >= w.k or w.group % block_k == 0:
        return 0
    return 1 if block_k % w.group == 0 else 2


def tile_args(w: QuantTensor, block_k: int) -> dict:
    """The constexprs `dequant_tile` takes for w at this BK."""
    return {"SCHEME": w.scheme, "GROUP": 1 if w.scheme == "fp8" else w.group, "GMODE": group_mode(w, block_k),
            "HAS_ZERO": w.zero is not None}


def weight_ptrs(w: QuantTensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(data, scale, zero, global_scale), contiguous; an absent field is replaced by scale (never read)."""
    scale, data = w.scale.contiguous(), w.data.contiguous()
    if w.scheme == "nvfp4" and data.shape[-1] % 4 == 0 and data.storage_offset() % 4 == 0:
        # whole int32 words per row: on a little-endian device column c is then at bits 4 * (c % 8) of word
        # c // 8, as w4a16's, and the tile loads as wide words instead of single bytes
        data = data.view(torch.int32)
    return (data, scale, scale if w.zero is None else w.zero.contiguous(),
            scale if w.global_scale is None else w.global_scale.contiguous())


def block_k_for(w: QuantTensor, block_k: int) -> int:
    """BK: at most `block_k`, no wider than K needs, at least 16 (tl.dot's minimum), narrowed where that
    spares a per-element scale gather."""
    bk = max(16, min(block_k, triton.next_power_of_2(w.k)))
    while bk > 16 and group_mode(w, bk) == 2:  # e.g. G = 48: BK = 16 reads one scale column per tile
        bk //= 2
    return bk


# ---- Triton kernel ----------------------------------------------------------------------------------------
@triton.jit
def _quant_linear_kernel(x_ptr, data_ptr, scale_ptr, zero_ptr, gscale_ptr, y_ptr, M, N, K, sx_m, sd_n, ss_n,
                         sy_m, SCHEME: tl.constexpr, GROUP: tl.constexpr, GMODE: tl.constexpr,
                         HAS_ZERO: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                         UPCAST: tl.constexpr, IEEE: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    ms = pid_m * BM + tl.arange(0, BM)
    m_ok = ms < M
    ms64 = tl.where(m_ok, ms, 0).to(tl.int64)
    ns = pid_n * BN + tl.arange(0, BN)
    n_ok = ns < N
    ks = tl.arange(0, BK)
    acc = tl.zeros((BM, BN), tl.float32)
    for k0 in range(0, K, BK):
        k_ok = (k0 + ks) < K
        a_MK = tl.load(x_ptr + ms64[:, None] * sx_m + (k0 + ks)[None, :], mask=m_ok[:, None] & k_ok[None, :],
                       other=0.0)
        w_NK = dequant_tile(data_ptr, scale_ptr, zero_ptr, gscale_ptr, pid_n * BN, N, k0, K, sd_n, ss_n,
                            x_ptr.dtype.element_ty, SCHEME, GROUP, GMODE, HAS_ZERO, BN, BK)
        acc = dot_acc(a_MK, tl.trans(w_NK), acc, UPCAST, IEEE)
    tl.store(y_ptr + ms64[:, None] * sy_m + ns[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=m_ok[:, None] & n_ok[None, :])


def default_tiles(m: int) -> tuple[int, int, int, int]:
    """(block_m, block_n, block_k, num_warps) by rows: one 16-row tile for decode-sized M, 64 x 64 tiles up to
    two canvases (enough programs to fill an H100 at N = 2816), 128 x 128 beyond."""
    if m <= 16:
        return 16, 64, 64, 4
    if m <= 512:
        return 64, 64, 64, 4
    return 128, 128, 64, 8


def quant_linear_triton(x: torch.Tensor, w: QuantTensor, *, block_m: int | None = None,
                        block_n: int | None = None, block_k: int | None = None, num_warps: int | None = None,
                        num_stages: int | None = None) -> torch.Tensor:
    """Same contract as `quant_linear_torch`, one launch on a (M tiles, N tiles) grid; tiles default to
    `default_tiles(M)`, each overridable (None stages: Triton's default)."""
    check_quant_linear_args(x, w)
    N, K = w.n, w.k
    x2 = x.reshape(-1, K)
    x2 = x2 if x2.stride(-1) == 1 else x2.contiguous()
    M = x2.shape[0]
    y = torch.empty(M, N, dtype=x.dtype, device=x.device)
    if M == 0:
        return y.view(*x.shape[:-1], N)
    bm, bn, bk, nw = default_tiles(M)
    bm, bn, nw = block_m or bm, block_n or bn, num_warps or nw
    bk = block_k_for(w, block_k or bk)
    data, scale, zero, gscale = weight_ptrs(w)
    launch = {"num_warps": nw} | ({"num_stages": num_stages} if num_stages else {})
    runnable(_quant_linear_kernel)[(triton.cdiv(M, bm), triton.cdiv(N, bn))](
        x2, data, scale, zero, gscale, y, M, N, K, x2.stride(0), data.stride(0), scale.stride(0), y.stride(0),
        BM=bm, BN=bn, BK=bk, UPCAST=interpret_mode() or x.dtype == torch.float32,
        IEEE=x.dtype == torch.float32, **tile_args(w, bk), **launch)
    return y.view(*x.shape[:-1], N)


def selfcheck(device: torch.device) -> bool:
    """One-time kernel-vs-reference comparison on `device` in bf16, every scheme, at a small odd shape."""
    g = torch.Generator(device="cpu").manual_seed(0)
    M, N, K = 5, 40, 72
    x = torch.randn(M, K, generator=g).to(device, torch.bfloat16)
    ok = True
    for w in random_quant_weights((), N, K, g, device):
        ref = quant_linear_torch(x.float(), w)
        out = quant_linear_triton(x, w).float()
        ok &= bool(((out - ref).abs().max() <= 0.02 * ref.abs().max() + 1e-3).item())
    return ok


def random_quant_weights(lead: tuple[int, ...], N: int, K: int, g: torch.Generator,
                         device: torch.device) -> list[QuantTensor]:
    """One weight [*lead, N, K] per scheme, random bytes (not quantized from anything) in kernels/dequant.py's
    layout with values of size about 1 / sqrt(K); w4a16 with groups of 32 and zero points (the self-checks
    use K not a multiple of 32 or 16, so rows end in a partial group)."""
    ng, n4 = -(-K // 32), -(-K // NVFP4_GROUP)
    rnd = lambda *s: torch.rand(*lead, *s, generator=g).to(device)  # noqa: E731
    ints = lambda lo, hi, s, dt: torch.randint(lo, hi, (*lead, *s), generator=g, dtype=dt).to(device)  # noqa: E731
    fp8 = lambda t: t.to(torch.float8_e4m3fn)  # noqa: E731
    return [
        QuantTensor("fp8", fp8(torch.randn(*lead, N, K, generator=g).to(device) * 32), rnd(N) / (32 * K**0.5),
                    K, K),
        QuantTensor("w4a16", ints(-2**31, 2**31 - 1, (N, -(-K // 8)), torch.int32),
                    (rnd(N, ng) / (8 * K**0.5)).to(torch.bfloat16), K, 32,
                    zero=ints(-8, 8, (N, ng), torch.int8)),
        QuantTensor("nvfp4", ints(0, 256, (N, -(-K // 2)), torch.uint8), fp8(rnd(N, n4) * 8), K, NVFP4_GROUP,
                    global_scale=(rnd(N) + 0.5) * 8 * K**0.5),
    ]
