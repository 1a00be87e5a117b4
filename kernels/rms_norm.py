"""RMSNorm with its neighbouring adds fused: torch reference, Triton kernel (one launch), launcher.

    x = norm(x) * wx; add = norm(add) * wa   (optional: the block tail's two post-feed-forward norms)
    x = x + add                        (optional; the block tail's d + m)
    y = x * (mean(x^2) + eps)^-0.5 [* w]   in fp32, cast to x's dtype (DiffusionGemma's norm, scale by w)
    y = residual + y                   (optional; the post-attention / post-feed-forward residual)
    y = y * scale                      (optional one-element tensor; the block's layer_scalar)

Why: a decoder layer has 11 norms (7 on the hidden state, q/k/v, the router's) and the torch form of each is
about nine launches (casts, pow, mean, add, pow, two muls, cast); the H100 profile of a full-size forward was
dominated by such small ops and launch stalls (bench/RESULTS.md, "Full-size decoder step on an H100"). The
kernel does the whole line in one launch per call and rounds to the activation dtype exactly where each torch
op would, so in bf16 it differs from the reference only by the order of the fp32 sum of squares.

Legend: N rows (all leading dims flattened), D normalised width.
"""

from __future__ import annotations

import torch

from kernels._triton_compat import interpret_mode, next_pow2, runnable, tl, triton


# ---- torch reference: the spec, and the CPU path (the model's original op sequence) ------------------------
def rms_norm_torch(x: torch.Tensor, weight: torch.Tensor | None, eps: float, *,
                   add: torch.Tensor | None = None, residual: torch.Tensor | None = None,
                   scale: torch.Tensor | None = None, norm_x: torch.Tensor | None = None,
                   norm_add: torch.Tensor | None = None) -> torch.Tensor:
    """`x * (mean(x^2) + eps)^-0.5 [* w]` in fp32, cast back to x's dtype (pow, not rsqrt, as reference).
    norm_x / norm_add: weights of norms applied to x / add first (each its own rounded result)."""
    if norm_x is not None:
        x = rms_norm_torch(x, norm_x, eps)
    if add is not None:
        if norm_add is not None:
            add = rms_norm_torch(add, norm_add, eps)
        x = x + add
    xf = x.float()
    y = xf * torch.pow(xf.pow(2).mean(-1, keepdim=True) + eps, -0.5)
    if weight is not None:
        y = y * weight.float()
    y = y.type_as(x)
    if residual is not None:
        y = residual + y
    if scale is not None:
        y = y * scale
    return y


# ---- Triton kernel -----------------------------------------------------------------------------------------
@triton.jit
def _rms_norm_kernel(x_ptr, add_ptr, w_ptr, res_ptr, scale_ptr, wx_ptr, wa_ptr, out_ptr, D, eps,
                     HAS_ADD: tl.constexpr, HAS_W: tl.constexpr, HAS_RES: tl.constexpr,
                     HAS_SCALE: tl.constexpr, NORM_X: tl.constexpr, NORM_ADD: tl.constexpr,
                     ROUND: tl.constexpr, BD: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BD)
    ok = cols < D
    x = tl.load(x_ptr + row * D + cols, mask=ok, other=0.0).to(tl.float32)
    if NORM_X:  # the same norm written out (kernels call no @jit helpers), rounded as its own torch result
        x = x * (1.0 / tl.sqrt(tl.sum(x * x, axis=0) / D + eps))
        x = x * tl.load(wx_ptr + cols, mask=ok, other=0.0).to(tl.float32)
        if ROUND:
            x = x.to(x_ptr.dtype.element_ty).to(tl.float32)
    if HAS_ADD:
        a = tl.load(add_ptr + row * D + cols, mask=ok, other=0.0).to(tl.float32)
        if NORM_ADD:
            a = a * (1.0 / tl.sqrt(tl.sum(a * a, axis=0) / D + eps))
            a = a * tl.load(wa_ptr + cols, mask=ok, other=0.0).to(tl.float32)
            if ROUND:
                a = a.to(x_ptr.dtype.element_ty).to(tl.float32)
        x = x + a
        if ROUND:  # torch rounds the sum to the activation dtype before the norm reads it
            x = x.to(x_ptr.dtype.element_ty).to(tl.float32)
    inv = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / D + eps)
    y = x * inv
    if HAS_W:
        y = y * tl.load(w_ptr + cols, mask=ok, other=0.0).to(tl.float32)
    if ROUND:
        y = y.to(x_ptr.dtype.element_ty).to(tl.float32)
    if HAS_RES:
        y = y + tl.load(res_ptr + row * D + cols, mask=ok, other=0.0).to(tl.float32)
        if ROUND and HAS_SCALE:
            y = y.to(x_ptr.dtype.element_ty).to(tl.float32)
    if HAS_SCALE:
        y = y * tl.load(scale_ptr).to(tl.float32)
    tl.store(out_ptr + row * D + cols, y.to(out_ptr.dtype.element_ty), mask=ok)


def rms_norm_triton(x: torch.Tensor, weight: torch.Tensor | None, eps: float, *,
                    add: torch.Tensor | None = None, residual: torch.Tensor | None = None,
                    scale: torch.Tensor | None = None, norm_x: torch.Tensor | None = None,
                    norm_add: torch.Tensor | None = None) -> torch.Tensor:
    """Triton launcher with the same contract as `rms_norm_torch` (one program per row)."""
    check_norm_args(x, weight, add, residual, scale, norm_x, norm_add)
    D = x.shape[-1]
    # torch's promotion: a one-element *1-D* scale promotes (bf16 * fp32 [1] -> fp32), a 0-D one does not
    out_dtype = x.dtype if scale is None or scale.dim() == 0 else torch.promote_types(x.dtype, scale.dtype)
    out = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    N = x.numel() // D if D else 0
    if N == 0:
        return out
    xc = x.contiguous()
    dummy = xc  # never read: the matching HAS_* flag is off
    bd = next_pow2(D)
    runnable(_rms_norm_kernel)[(N,)](
        xc, add.contiguous() if add is not None else dummy, weight if weight is not None else dummy,
        residual.contiguous() if residual is not None else dummy, scale if scale is not None else dummy,
        norm_x if norm_x is not None else dummy, norm_add if norm_add is not None else dummy, out,
        D, float(eps), HAS_ADD=add is not None, HAS_W=weight is not None, HAS_RES=residual is not None,
        HAS_SCALE=scale is not None, NORM_X=norm_x is not None, NORM_ADD=norm_add is not None,
        ROUND=x.dtype != torch.float32 and not interpret_mode(), BD=bd,
        num_warps=min(16, max(1, bd // 256)))
    return out



# ---- two norms of one input (the block's two pre-feed-forward norms of r) ----------------------------------
def rms_norm_pair_torch(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor,
                        eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(rms_norm(x, w1), rms_norm(x, w2)): the reference is two separate norms."""
    return rms_norm_torch(x, w1, eps), rms_norm_torch(x, w2, eps)


@triton.jit
def _rms_norm_pair_kernel(x_ptr, w1_ptr, w2_ptr, y1_ptr, y2_ptr, D, eps, BD: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BD)
    ok = cols < D
    x = tl.load(x_ptr + row * D + cols, mask=ok, other=0.0).to(tl.float32)
    y = x * (1.0 / tl.sqrt(tl.sum(x * x, axis=0) / D + eps))
    y1 = y * tl.load(w1_ptr + cols, mask=ok, other=0.0).to(tl.float32)
    y2 = y * tl.load(w2_ptr + cols, mask=ok, other=0.0).to(tl.float32)
    tl.store(y1_ptr + row * D + cols, y1.to(y1_ptr.dtype.element_ty), mask=ok)
    tl.store(y2_ptr + row * D + cols, y2.to(y2_ptr.dtype.element_ty), mask=ok)


def rms_norm_pair_triton(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor,
                         eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `rms_norm_pair_torch`: one read of x, both outputs, one launch."""
    for w in (w1, w2):
        check_norm_args(x, w, None, None, None)
    x = x.contiguous()
    y1, y2 = torch.empty_like(x), torch.empty_like(x)
    D = x.shape[-1]
    N = x.numel() // D if D else 0
    if N:
        bd = next_pow2(D)
        runnable(_rms_norm_pair_kernel)[(N,)](x, w1, w2, y1, y2, D, float(eps), BD=bd,
                                              num_warps=min(16, max(1, bd // 256)))
    return y1, y2


def selfcheck_pair(device: torch.device) -> bool:
    """One-time comparison of the pair kernel with its reference on `device` (bf16)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(13, 200, generator=g).to(device, torch.bfloat16)
    w1, w2 = ((torch.rand(200, generator=g) + 0.5).to(device, torch.bfloat16) for _ in range(2))
    return all(torch.allclose(a.float(), b.float(), rtol=2**-7, atol=1e-3)
               for a, b in zip(rms_norm_pair_triton(x, w1, w2, 1e-6), rms_norm_pair_torch(x, w1, w2, 1e-6)))

def check_norm_args(x, weight, add, residual, scale, norm_x=None, norm_add=None) -> None:
    """Shape/dtype contract of the Triton path; raises ValueError naming the bad argument."""
    D = x.shape[-1]
    for name, w in (("weight", weight), ("norm_x", norm_x), ("norm_add", norm_add)):
        if w is not None and (w.dim() != 1 or w.shape[0] != D):
            raise ValueError(f"rms_norm: {name} {tuple(w.shape)} does not fit width {D}")
    if norm_add is not None and add is None:
        raise ValueError("rms_norm: norm_add given without add")
    for name, t in (("add", add), ("residual", residual)):
        if t is not None and (t.shape != x.shape or t.dtype != x.dtype):
            raise ValueError(f"rms_norm: {name} {tuple(t.shape)} {t.dtype} must match x {tuple(x.shape)} "
                             f"{x.dtype}")
    if scale is not None and scale.numel() != 1:
        raise ValueError(f"rms_norm: scale must have one element, got shape {tuple(scale.shape)}")


def selfcheck(device: torch.device) -> bool:
    """One-time kernel-vs-reference comparison on `device` in bf16 at a small odd shape, every option on."""
    g = torch.Generator(device="cpu").manual_seed(0)
    N, D = 13, 200
    x, a, r = (torch.randn(N, D, generator=g).to(device, torch.bfloat16) for _ in range(3))
    w = (torch.rand(D, generator=g) + 0.5).to(device, torch.bfloat16)
    s = torch.tensor([0.7], device=device, dtype=torch.bfloat16)
    ref = rms_norm_torch(x, w, 1e-6, add=a, residual=r, scale=s).float()
    out = rms_norm_triton(x, w, 1e-6, add=a, residual=r, scale=s).float()
    return bool(((out - ref).abs().max() <= 0.02 * ref.abs().max() + 1e-3).item())
