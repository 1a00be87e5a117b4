"""Row softmax over the vocabulary in fp32, written in a narrow dtype: torch reference, Triton kernel.

    p = softmax(float(x), dim=-1).to(out_dtype)      x: [.., V] (bf16 self-conditioning logits), p: [.., V]

Why: self-conditioning feeds softmax(previous logits) @ E back into the decoder (model/self_conditioning.py).
The torch form upcasts the bf16 logits to an fp32 copy, softmaxes it into another fp32 tensor and casts that
back: about 20 bytes of traffic per logit. The kernel reads the bf16 row twice (max and sum in one online
pass, then the normalised write) and writes bf16 once: 6 bytes. At 8 canvases and V = 262,144 that is about
7 GB less per decoder forward.

Legend: N rows (all leading dims flattened), V vocabulary.
"""

from __future__ import annotations

import torch

from kernels._triton_compat import next_pow2, runnable, tl, triton


# ---- torch reference: the spec, and the CPU path (the model's op sequence) ---------------------------------
def softmax_torch(x: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    return torch.softmax(x, dim=-1, dtype=torch.float32).to(out_dtype)


# ---- Triton kernel: one program per row, tiles of BLOCK_V -------------------------------------------------
@triton.jit
def _softmax_kernel(x_ptr, p_ptr, V, BLOCK_V: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_V)
    # finite start: exp(m - new_m) underflows to 0 instead of giving inf - inf
    m = tl.full([], -3.0e38, tl.float32)
    s = tl.zeros([], tl.float32)
    for start in range(0, V, BLOCK_V):
        cols = start + offs
        x = tl.load(x_ptr + row * V + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
        new_m = tl.maximum(m, tl.max(x, 0))
        s = s * tl.exp(m - new_m) + tl.sum(tl.exp(x - new_m), 0)
        m = new_m
    inv_s = 1.0 / s
    for start in range(0, V, BLOCK_V):
        cols = start + offs
        x = tl.load(x_ptr + row * V + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
        tl.store(p_ptr + row * V + cols, (tl.exp(x - m) * inv_s).to(p_ptr.dtype.element_ty), mask=cols < V)


def softmax_triton(x: torch.Tensor, out_dtype: torch.dtype, *, block_v: int | None = None) -> torch.Tensor:
    """Same contract as `softmax_torch`, one launch (rows of any length; a row of -inf gives NaN as torch)."""
    x = x.contiguous()
    V = x.shape[-1]
    p = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    N = x.numel() // V if V else 0
    if N:
        block_v = block_v or min(4096, max(16, next_pow2(V)))
        runnable(_softmax_kernel)[(N,)](x, p, V, BLOCK_V=block_v, num_warps=8 if block_v >= 2048 else 4)
    return p


def selfcheck(device: torch.device) -> bool:
    """One-time kernel-vs-reference comparison on `device` (bf16 logits, a row wider than one tile)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    x = (torch.randn(5, 9001, generator=g) * 8).to(device, torch.bfloat16)
    got, want = softmax_triton(x, torch.bfloat16).float(), softmax_torch(x, torch.bfloat16).float()
    return bool(torch.allclose(got, want, rtol=1e-2, atol=1e-6))
