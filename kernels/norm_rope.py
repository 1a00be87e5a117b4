"""Per-head RMSNorm followed by rotary embedding (the q and k paths of attention): torch reference, Triton
kernel (one launch), launcher.

    y = rms_norm(x, w)                 per head over D, fp32 math, cast to x's dtype
    out = y * cos + rotate_half(y) * sin   rotate-half convention, cos/sin already in x's dtype

Why: in torch this is about nine launches for the norm plus six for the rotation (cat, neg, two muls, add),
for q and for k in every layer; the kernel reads each head row once and writes it once. It rounds to the
activation dtype where each torch op would, so in bf16 it differs from the reference only by the order of
the fp32 sum of squares. Proportional RoPE needs nothing special: its unrotated frequencies have cos 1, sin 0.

Legend: B batch, T tokens, Hh heads, D head dim (even), R = B*T rows of cos/sin.
"""

from __future__ import annotations

import torch

from kernels._triton_compat import interpret_mode, next_pow2, runnable, tl, triton
from kernels.rms_norm import rms_norm_torch


# ---- torch reference: the spec, and the CPU path (the model's original op sequence) ------------------------
def rotate_half_rope(x_BTHD: torch.Tensor, cos_BTD: torch.Tensor, sin_BTD: torch.Tensor) -> torch.Tensor:
    """Rotate per head; cos/sin broadcast over the head axis."""
    half = x_BTHD.shape[-1] // 2
    rot = torch.cat((-x_BTHD[..., half:], x_BTHD[..., :half]), dim=-1)
    return x_BTHD * cos_BTD[:, :, None] + rot * sin_BTD[:, :, None]


def norm_rope_torch(x_BTHD: torch.Tensor, weight_D: torch.Tensor, eps: float, cos_BTD: torch.Tensor,
                    sin_BTD: torch.Tensor) -> torch.Tensor:
    return rotate_half_rope(rms_norm_torch(x_BTHD, weight_D, eps), cos_BTD, sin_BTD)


# ---- Triton kernel -----------------------------------------------------------------------------------------
@triton.jit
def _norm_rope_kernel(x_ptr, w_ptr, cos_ptr, sin_ptr, out_ptr, HEADS, D, HALF, eps,
                      ROUND: tl.constexpr, BH: tl.constexpr, HP: tl.constexpr):
    # one token per program: its HEADS rows of D values share one cos/sin row (loaded once). One row per
    # program was 256-512 bytes of work each, and at one warp a program the 32-programs-per-SM cap held an
    # H100 to half its warps (bench/compile_sm90.py)
    tok = tl.program_id(0).to(tl.int64)
    heads = tl.arange(0, HP)
    cols = tl.arange(0, BH)
    c_ok = cols < HALF
    ok = (heads < HEADS)[:, None] & c_ok[None, :]
    at = (tok * HEADS + heads)[:, None] * D + cols[None, :]
    x1 = tl.load(x_ptr + at, mask=ok, other=0.0).to(tl.float32)
    x2 = tl.load(x_ptr + at + HALF, mask=ok, other=0.0).to(tl.float32)
    inv = 1.0 / tl.sqrt((tl.sum(x1 * x1, axis=1) + tl.sum(x2 * x2, axis=1)) / D + eps)
    y1 = x1 * inv[:, None] * tl.load(w_ptr + cols, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    y2 = x2 * inv[:, None] * tl.load(w_ptr + HALF + cols, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    c1 = tl.load(cos_ptr + tok * D + cols, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    c2 = tl.load(cos_ptr + tok * D + HALF + cols, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    s1 = tl.load(sin_ptr + tok * D + cols, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    s2 = tl.load(sin_ptr + tok * D + HALF + cols, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    dt = x_ptr.dtype.element_ty
    if ROUND:  # round where torch's bf16 ops round: the norm's output, each product, the sum
        y1 = y1.to(dt).to(tl.float32)
        y2 = y2.to(dt).to(tl.float32)
        o1 = (y1 * c1).to(dt).to(tl.float32) + (-y2 * s1).to(dt).to(tl.float32)
        o2 = (y2 * c2).to(dt).to(tl.float32) + (y1 * s2).to(dt).to(tl.float32)
    else:
        o1 = y1 * c1 - y2 * s1
        o2 = y2 * c2 + y1 * s2
    tl.store(out_ptr + at, o1.to(out_ptr.dtype.element_ty), mask=ok)
    tl.store(out_ptr + at + HALF, o2.to(out_ptr.dtype.element_ty), mask=ok)


def norm_rope_triton(x_BTHD: torch.Tensor, weight_D: torch.Tensor, eps: float, cos_BTD: torch.Tensor,
                     sin_BTD: torch.Tensor) -> torch.Tensor:
    """Triton launcher with the same contract as `norm_rope_torch` (one program per token, all its heads)."""
    check_norm_rope_args(x_BTHD, weight_D, cos_BTD, sin_BTD)
    B, T, Hh, D = x_BTHD.shape
    out = torch.empty_like(x_BTHD, memory_format=torch.contiguous_format)
    if out.numel() == 0:
        return out
    half = D // 2
    bh, hp = next_pow2(half), next_pow2(Hh)
    cos_BTD, sin_BTD = (t.expand(B, T, D).contiguous() for t in (cos_BTD, sin_BTD))  # [1, T, D] broadcasts
    runnable(_norm_rope_kernel)[(B * T,)](
        x_BTHD.contiguous(), weight_D, cos_BTD, sin_BTD, out, Hh, D, half,
        float(eps), ROUND=x_BTHD.dtype != torch.float32 and not interpret_mode(), BH=bh, HP=hp,
        num_warps=min(8, max(1, hp * bh // 512)))
    return out


def check_norm_rope_args(x_BTHD, weight_D, cos_BTD, sin_BTD) -> None:
    """Shape/dtype contract shared by both backends; raises ValueError naming the bad argument."""
    if x_BTHD.dim() != 4 or x_BTHD.shape[-1] % 2:
        raise ValueError(f"norm_rope: want x_BTHD [B, T, heads, D] with D even, got {tuple(x_BTHD.shape)}")
    B, T, _, D = x_BTHD.shape
    if tuple(weight_D.shape) != (D,):
        raise ValueError(f"norm_rope: weight_D {tuple(weight_D.shape)} does not fit head dim {D}")
    for name, t in (("cos_BTD", cos_BTD), ("sin_BTD", sin_BTD)):
        shape_ok = t.dim() == 3 and t.shape[0] in (1, B) and tuple(t.shape[1:]) == (T, D)
        if not shape_ok or t.dtype != x_BTHD.dtype:
            raise ValueError(f"norm_rope: {name} {tuple(t.shape)} {t.dtype} must be [{B} or 1, {T}, {D}] "
                             f"{x_BTHD.dtype}")


def selfcheck(device: torch.device) -> bool:
    """One-time kernel-vs-reference comparison on `device` in bf16 at a small odd shape."""
    g = torch.Generator(device="cpu").manual_seed(0)
    B, T, Hh, D = 2, 5, 3, 40
    x = torch.randn(B, T, Hh, D, generator=g).to(device, torch.bfloat16)
    w = (torch.rand(D, generator=g) + 0.5).to(device, torch.bfloat16)
    ang = torch.rand(B, T, D, generator=g) * 6.0
    cos, sin = ang.cos().to(device, torch.bfloat16), ang.sin().to(device, torch.bfloat16)
    ref = norm_rope_torch(x, w, 1e-6, cos, sin).float()
    out = norm_rope_triton(x, w, 1e-6, cos, sin).float()
    return bool(((out - ref).abs().max() <= 0.02 * ref.abs().max() + 1e-3).item())
