"""Row softmax over the vocabulary in fp32, written in a narrow dtype: torch reference, Triton kernel.

    p = softmax(float(x), dim=-1).to(out_dtype)      x: [.., V] (bf16 self-conditioning logits), p: [.., V]

Why: self-conditioning feeds softmax(previous logits) @ E back into the decoder (model/self_conditioning.py).
The torch form upcasts the bf16 logits to an fp32 copy, softmaxes it into another fp32 tensor and casts that
back: about 20 bytes of traffic per logit. The kernel reads the bf16 row twice (max and sum in one online
pass, then the normalised write) and writes bf16 once: 6 bytes. At 8 canvases and V = 262,144 that is about
7 GB less per decoder forward.

Head mode (cap given): x is the LM head's raw output and each row is first processed exactly as
kernels/logit_epilogue.py writes the self-conditioning copy, narrow(softcap(x) / T), so the GPU step goes from
the LM head straight to the next step's probabilities: no copy written and read back (4 bytes a logit less).

Legend: N rows (all leading dims flattened), V vocabulary, R temperature rows (each covers N / R rows).
"""

from __future__ import annotations

import torch

from kernels._triton_compat import next_pow2, runnable, tl, triton
from kernels._triton_math import softcap_f32
from kernels.logit_epilogue import logit_epilogue_torch


# ---- torch reference: the spec, and the CPU path (the model's op sequence) ---------------------------------
def softmax_torch(x: torch.Tensor, out_dtype: torch.dtype, *, cap: float | None = None,
                  temperature_R: torch.Tensor | None = None) -> torch.Tensor:
    if cap is not None:
        x = logit_epilogue_torch(x, cap, temperature_R, out_dtype, keep_fp32=False)[1]
    return torch.softmax(x, dim=-1, dtype=torch.float32).to(out_dtype)


# ---- Triton kernel: one program per row, tiles of BLOCK_V -------------------------------------------------
@triton.jit
def _load_row(x_ptr, p_ptr, row, cols, V, t, cap, HEAD: tl.constexpr, HAS_T: tl.constexpr):
    """One tile of a row in fp32; HEAD: processed as the logit epilogue's narrow copy (same ops, rounded to
    the output dtype as its store would). Tail columns are -inf (no probability)."""
    ok = cols < V
    x = tl.load(x_ptr + row * V + cols, mask=ok, other=0.0).to(tl.float32)
    if HEAD:
        x = softcap_f32(x, cap)
        if HAS_T:
            x = x / t
        x = x.to(p_ptr.dtype.element_ty).to(tl.float32)
    return tl.where(ok, x, float("-inf"))


@triton.jit
def _softmax_kernel(x_ptr, p_ptr, t_ptr, V, cap, ROWS_PER_T, BLOCK_V: tl.constexpr, HEAD: tl.constexpr,
                    HAS_T: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_V)
    t = tl.full([], 1.0, tl.float32)
    if HAS_T:
        t = tl.load(t_ptr + row // ROWS_PER_T).to(tl.float32)
    # finite start: exp(m - new_m) underflows to 0 instead of giving inf - inf
    m = tl.full([], -3.0e38, tl.float32)
    s = tl.zeros([], tl.float32)
    for start in range(0, V, BLOCK_V):
        x = _load_row(x_ptr, p_ptr, row, start + offs, V, t, cap, HEAD, HAS_T)
        new_m = tl.maximum(m, tl.max(x, 0))
        s = s * tl.exp(m - new_m) + tl.sum(tl.exp(x - new_m), 0)
        m = new_m
    inv_s = 1.0 / s
    for start in range(0, V, BLOCK_V):
        cols = start + offs
        x = _load_row(x_ptr, p_ptr, row, cols, V, t, cap, HEAD, HAS_T)
        tl.store(p_ptr + row * V + cols, (tl.exp(x - m) * inv_s).to(p_ptr.dtype.element_ty), mask=cols < V)


def softmax_triton(x: torch.Tensor, out_dtype: torch.dtype, *, cap: float | None = None,
                   temperature_R: torch.Tensor | None = None, block_v: int | None = None) -> torch.Tensor:
    """Same contract as `softmax_torch`, one launch (rows of any length; a row of -inf gives NaN as torch)."""
    check_softmax_args(x, cap, temperature_R)
    x = x.contiguous()
    V = x.shape[-1]
    p = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    N = x.numel() // V if V else 0
    if N:
        block_v = block_v or min(4096, max(16, next_pow2(V)))
        has_t = temperature_R is not None
        t = temperature_R.float().contiguous() if has_t else p
        runnable(_softmax_kernel)[(N,)](
            x, p, t, V, float(cap or 1.0), N // temperature_R.numel() if has_t else 1, BLOCK_V=block_v,
            HEAD=cap is not None, HAS_T=has_t, num_warps=8 if block_v >= 2048 else 4)
    return p


def check_softmax_args(x: torch.Tensor, cap: float | None, temperature_R: torch.Tensor | None) -> None:
    """Head mode's contract: a temperature needs the cap, one per leading row of x; raises ValueError."""
    if temperature_R is None:
        return
    if cap is None:
        raise ValueError("softmax: temperature_R applies only in head mode (pass cap)")
    if temperature_R.dim() != 1 or temperature_R.numel() != x.shape[0] or temperature_R.device != x.device:
        raise ValueError(f"softmax: temperature_R must be [{x.shape[0]}] on {x.device}, got "
                         f"{tuple(temperature_R.shape)} on {temperature_R.device}")


def selfcheck(device: torch.device) -> bool:
    """One-time kernel-vs-reference comparison on `device` (bf16 logits, a row wider than one tile)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    x = (torch.randn(5, 9001, generator=g) * 8).to(device, torch.bfloat16)
    got, want = softmax_triton(x, torch.bfloat16).float(), softmax_torch(x, torch.bfloat16).float()
    return bool(torch.allclose(got, want, rtol=1e-2, atol=1e-6))
