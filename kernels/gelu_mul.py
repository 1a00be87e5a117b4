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
def _gelu_mul_kernel(g_ptr, u_ptr, y_ptr, N, ROUND: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < N
    g = tl.load(g_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    a = 0.5 * g * (1.0 + tanh_f32(0.7978845608028654 * (g + 0.044715 * g * g * g)))
    if ROUND:  # torch's gelu returns the activation dtype before the product
        a = a.to(y_ptr.dtype.element_ty).to(tl.float32)
    y = a * tl.load(u_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=ok)


def gelu_mul_triton(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Same contract as `gelu_mul_torch` (same shapes and dtype), one launch."""
    if g.shape != u.shape or g.dtype != u.dtype:
        raise ValueError(f"gelu_mul: gate {tuple(g.shape)} {g.dtype} and up {tuple(u.shape)} {u.dtype} "
                         "differ")
    g, u = g.contiguous(), u.contiguous()
    y = torch.empty_like(g)
    N = g.numel()
    if N:
        runnable(_gelu_mul_kernel)[(triton.cdiv(N, BLOCK),)](
            g, u, y, N, ROUND=g.dtype != torch.float32 and not interpret_mode(), BLOCK=BLOCK, num_warps=4)
    return y


def selfcheck(device: torch.device) -> bool:
    """One-time kernel-vs-reference comparison on `device` in bf16."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    g, u = ((torch.randn(37, 301, generator=gen) * 3).to(device, torch.bfloat16) for _ in range(2))
    got, want = gelu_mul_triton(g, u).float(), gelu_mul_torch(g, u).float()
    return bool(torch.allclose(got, want, rtol=2**-6, atol=1e-3))
