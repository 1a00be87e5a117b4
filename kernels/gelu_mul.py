"""The gated GELU of the dense MLPs: gelu_tanh(gate) * up, torch reference, Triton kernel (one launch).

    y = gelu_tanh(g) * u        g, u: the gate and up projections [.., I] in the activation dtype

Why: the decoder layer's dense "shared expert" and the self-conditioning MLP both run this between their
GEMMs; in torch it is two launches (gelu, product) and a round trip of the [.., I] activation through memory.
The kernel rounds the GELU to the activation dtype before the product, as the two torch ops do.

tanh is kernels/_triton_math.py's, written with exp (the interpreter has no libdevice).

Legend: N elements.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels._triton_compat import interpret_mode, runnable, tl, triton
from kernels._triton_math import tanh_f32

BLOCK = 1024


# ---- torch reference: the spec, and the CPU path (the model's op sequence) ---------------------------------
def gelu_mul_torch(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    return F.gelu(g, approximate="tanh") * u


# ---- Triton kernel ----------------------------------------------------------------------------------------
@triton.jit
def _gelu_mul_kernel(g_ptr, u_ptr, y_ptr, N, I, sg, su, ROUND: tl.constexpr, BLOCK: tl.constexpr):  # noqa: E741
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < N
    # rows of I elements, each input row at its own stride (a [T, 2I] gate+up output is read in place)
    row, col = offs // I, offs % I
    g = tl.load(g_ptr + row * sg + col, mask=ok, other=0.0).to(tl.float32)
    a = 0.5 * g * (1.0 + tanh_f32(0.7978845608028654 * (g + 0.044715 * g * g * g)))
    if ROUND:  # torch's gelu returns the activation dtype before the product
        a = a.to(y_ptr.dtype.element_ty).to(tl.float32)
    y = a * tl.load(u_ptr + row * su + col, mask=ok, other=0.0).to(tl.float32)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=ok)


def gelu_mul_triton(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Same contract as `gelu_mul_torch` (same shapes and dtype), one launch; row-strided inputs with
    contiguous rows (the two halves of a gate+up GEMM output) are read in place."""
    if g.shape != u.shape or g.dtype != u.dtype:
        raise ValueError(f"gelu_mul: gate {tuple(g.shape)} {g.dtype} and up {tuple(u.shape)} {u.dtype} "
                         "differ")
    I = g.shape[-1] if g.dim() else 1  # noqa: E741
    g2, u2 = (t.reshape(-1, I) if t.dim() else t.reshape(1, 1) for t in (g, u))
    g2, u2 = (t if t.stride(-1) == 1 else t.contiguous() for t in (g2, u2))  # reshape copies if it must
    y = torch.empty(g.shape, dtype=g.dtype, device=g.device)
    N = g.numel()
    if N:
        rnd = g.dtype != torch.float32 and not interpret_mode()
        runnable(_gelu_mul_kernel)[(triton.cdiv(N, BLOCK),)](
            g2, u2, y, N, I, g2.stride(0), u2.stride(0), ROUND=rnd, BLOCK=BLOCK, num_warps=4)
    return y


def selfcheck(device: torch.device) -> bool:
    """One-time kernel-vs-reference comparison on `device` in bf16."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    g, u = ((torch.randn(37, 301, generator=gen) * 3).to(device, torch.bfloat16) for _ in range(2))
    got, want = gelu_mul_triton(g, u).float(), gelu_mul_torch(g, u).float()
    return bool(torch.allclose(got, want, rtol=2**-6, atol=1e-3))
