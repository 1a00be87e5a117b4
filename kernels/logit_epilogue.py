"""The LM head's logit epilogue: softcap, the step's temperature, and the narrow copy, in one pass.

    y = tanh(float(x) / cap) * cap          the model's final softcap (fp32)
    y = y / temperature_R[row group]        optional: the denoising step's per-row temperature (in place in
                                            the torch form, as the reference's LogitsProcessor)
    n = y.to(narrow_dtype)                  optional: the next step's self-conditioning input

x is the LM head's output [R, ..., V] in the activation dtype; a temperature row applies to everything under
its leading index. Returns (y fp32, n or None).

Why: the torch form is up to six passes over the [rows, V] logits (the upcast, division, tanh, product,
temperature, narrow cast), each reading and writing fp32 at V = 262,144: about 44 bytes per logit. The kernel
reads the bf16 logit once and writes fp32 and bf16 once (8 bytes): at 8 canvases (2,048 rows) about 19 GB
less traffic per decoder forward, some 6 ms of an H100's bandwidth.

tanh is kernels/_triton_math.py's, written with exp (the interpreter has no libdevice); its absolute error is
a few fp32 ulps of 1, a few 1e-6 after the multiplication by cap = 30.

Legend: R leading rows (canvases), N = all rows above the last dim, V vocabulary.
"""

from __future__ import annotations

import torch

from kernels._triton_compat import runnable, tl, triton
from kernels._triton_math import softcap_f32

BLOCK = 2048


# ---- torch reference: the spec, and the CPU path (the model's and the reference sampler's op sequence) ----
def logit_epilogue_torch(x: torch.Tensor, cap: float, temperature_R: torch.Tensor | None = None,
                         narrow_dtype: torch.dtype | None = None, *, keep_fp32: bool = True
                         ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    y = torch.tanh(x.float() / cap) * cap
    if temperature_R is not None:
        y = y.div_(temperature_R.view(-1, *([1] * (y.dim() - 1))))
    return (y if keep_fp32 else None), (y.to(narrow_dtype) if narrow_dtype is not None else None)


# ---- Triton kernel: grid (rows, V blocks) -----------------------------------------------------------------
@triton.jit
def _epilogue_kernel(x_ptr, t_ptr, y_ptr, n_ptr, V, cap, ROWS_PER_T,
                     HAS_T: tl.constexpr, HAS_NARROW: tl.constexpr, WRITE_Y: tl.constexpr,
                     BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = cols < V
    y = softcap_f32(tl.load(x_ptr + row * V + cols, mask=ok, other=0.0).to(tl.float32), cap)
    if HAS_T:
        y = y / tl.load(t_ptr + row // ROWS_PER_T).to(tl.float32)
    if WRITE_Y:
        tl.store(y_ptr + row * V + cols, y, mask=ok)
    if HAS_NARROW:
        tl.store(n_ptr + row * V + cols, y.to(n_ptr.dtype.element_ty), mask=ok)


def logit_epilogue_triton(
    x: torch.Tensor, cap: float, temperature_R: torch.Tensor | None = None,
    narrow_dtype: torch.dtype | None = None, *, keep_fp32: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Same contract as `logit_epilogue_torch`, one launch; without keep_fp32 the fp32 logits are never
    written (the sampler's head mode recomputes them from x: kernels/sampler.py)."""
    check_epilogue_args(x, temperature_R, narrow_dtype, keep_fp32)
    x = x.contiguous()
    V = x.shape[-1]
    y = torch.empty(x.shape, dtype=torch.float32, device=x.device) if keep_fp32 else None
    n = torch.empty(x.shape, dtype=narrow_dtype, device=x.device) if narrow_dtype is not None else None
    N = x.numel() // V if V else 0
    if N:
        out = y if y is not None else n
        t = temperature_R.float().contiguous() if temperature_R is not None else out
        runnable(_epilogue_kernel)[(N, triton.cdiv(V, BLOCK))](
            x, t, out, n if n is not None else out, V, float(cap),
            N // temperature_R.numel() if temperature_R is not None else 1,
            HAS_T=temperature_R is not None, HAS_NARROW=n is not None, WRITE_Y=keep_fp32, BLOCK=BLOCK,
            num_warps=8)
    return y, n


def check_epilogue_args(x: torch.Tensor, temperature_R: torch.Tensor | None,
                        narrow_dtype: torch.dtype | None = None, keep_fp32: bool = True) -> None:
    """Shape contract shared by both backends; raises ValueError naming the bad argument."""
    if not keep_fp32 and narrow_dtype is None:
        raise ValueError("logit_epilogue: keep_fp32=False needs narrow_dtype (otherwise nothing is written)")
    if x.dim() < 2:
        raise ValueError(f"logit_epilogue: x must be [R, ..., V], got {tuple(x.shape)}")
    if temperature_R is not None and (temperature_R.dim() != 1 or temperature_R.numel() != x.shape[0]
                                      or temperature_R.device != x.device):
        raise ValueError(f"logit_epilogue: temperature_R must be [{x.shape[0]}] on {x.device}, got "
                         f"{tuple(temperature_R.shape)} on {temperature_R.device}")


def selfcheck(device: torch.device) -> bool:
    """One-time kernel-vs-reference comparison on `device` (bf16 logits up to +-200, two temperatures)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    x = (torch.randn(2, 5, 3001, generator=g) * 60).to(device, torch.bfloat16)
    x[0, 0, :3] = torch.tensor([0.0, 1e-4, -1e-4])
    temp = torch.tensor([0.5, 0.8], device=device)
    got = logit_epilogue_triton(x, 30.0, temp, torch.bfloat16)
    want = logit_epilogue_torch(x, 30.0, temp, torch.bfloat16)
    return bool(torch.allclose(got[0], want[0], atol=1e-4, rtol=0)
                and torch.allclose(got[1].float(), want[1].float(), atol=1e-4, rtol=2**-7))
