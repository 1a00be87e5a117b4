"""Per-position stream keys and the counter-based noise hash of the fused sampler (kernels/sampler.py).

Owns: `mix32` (a bijective 32-bit mixer; the kernels inline it as kernels/_triton_math.py `mix32_u32`),
`row_state` / `uniform_noise` (u in (0, 1) from the hash of a row's key and a column), and `derive_keys`
(torch reference and one-launch kernel), which turns (row seed, canvas index, step index, position) into the
int64 key of each canvas position's sampling stream, so a row's noise depends only on its own key:
reproducible per request and independent of batch composition.

Legend: B rows, C canvas length, N rows of keys (B*C), V columns.
"""

from __future__ import annotations

import torch

from kernels._triton_compat import next_pow2, runnable, tl, triton
from kernels._triton_math import mix32_u32

# ---- the noise hash (torch side; the kernel inlines the same arithmetic in uint32) -------------------------
# Every multiplier is odd and < 2**31, so a 32-bit value times it stays below 2**63: the int64 torch
# arithmetic never overflows, and masking to 32 bits equals Triton's wrapping uint32 arithmetic exactly.
M32 = 0xFFFFFFFF
MUL1 = 0x21F0AAAD  # xorshift-multiply mixer constants (a low-bias 32-bit integer hash)
MUL2 = 0x735A2D97
COL_MUL = 0x61C88647  # 2**32 - golden ratio * 2**32: spreads column indices before mixing
_SALT = (0x1B873593, 0x5BD1E995, 0x27D4EB2F, 0x165667B1, 0x68E31DA4, 0x3C6EF372)


def mix32(x: torch.Tensor) -> torch.Tensor:
    """Bijective 32-bit mix of int64 values in [0, 2**32); returns int64 in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * MUL1) & M32
    x = x ^ (x >> 15)
    x = (x * MUL2) & M32
    return x ^ (x >> 15)


def row_state(key_N: torch.Tensor) -> torch.Tensor:
    """Per-row 32-bit stream state (int64 in [0, 2**32)) folded from the 64-bit key."""
    lo, hi = key_N & M32, (key_N >> 32) & M32
    return mix32(lo ^ mix32(hi ^ _SALT[0]))


def uniform_noise(state_N: torch.Tensor, cols_V: torch.Tensor) -> torch.Tensor:
    """u[n, v] in (0, 1) fp32 from the hash of (state_N[n], cols_V[v]); 24-bit odd grid, exact in fp32."""
    h = mix32(state_N[:, None] ^ ((cols_V * COL_MUL) & M32)[None, :])
    return ((h >> 9) * 2 + 1).to(torch.float32) * 2.0**-24


def derive_keys_torch(seed_B: torch.Tensor | int, canvas_B: torch.Tensor | int,
                      step_B: torch.Tensor | int, C: int) -> torch.Tensor:
    """Stream keys key_(B*C) int64 in [0, 2**62) for canvas positions, row-major (b, c) (torch reference).

    seed_B: the request's seed (any int64). canvas_B: index of the canvas within the request. step_B: a step
    counter unique within the canvas (e.g. the denoising step index). Ints broadcast. Distinct inputs give
    distinct, well-mixed keys; the same inputs always give the same key on any device.
    """
    dev = next((t.device for t in (seed_B, canvas_B, step_B) if isinstance(t, torch.Tensor)), None)
    seed, canvas, step = (torch.as_tensor(t, dtype=torch.int64, device=dev).reshape(-1)
                          for t in (seed_B, canvas_B, step_B))
    seed, canvas, step = torch.broadcast_tensors(seed, canvas, step)
    s = mix32((seed & M32) ^ mix32(((seed >> 32) & M32) ^ _SALT[1]))
    s = mix32(s ^ mix32((canvas & M32) ^ _SALT[2]))
    s = mix32(s ^ mix32((step & M32) ^ _SALT[3]))
    pos_C = torch.arange(C, dtype=torch.int64, device=s.device)
    lo = mix32(s[:, None] ^ mix32(pos_C ^ _SALT[4])[None, :])
    hi = mix32(lo ^ _SALT[5])
    return (((hi & 0x3FFFFFFF) << 32) | lo).reshape(-1)


# ---- derive_keys as one launch (the torch form is about 130 small integer ops per call, twice a step) ------
@triton.jit
def _derive_keys_kernel(seed_ptr, canvas_ptr, step_ptr, out_ptr, C, s_seed, s_canvas, s_step,
                        BC: tl.constexpr):
    b = tl.program_id(0)
    seed = tl.load(seed_ptr + b * s_seed)
    # the chain of derive_keys_torch in wrapping uint32
    s = mix32_u32(seed.to(tl.uint32) ^ mix32_u32((seed >> 32).to(tl.uint32) ^ 0x5BD1E995))
    s = mix32_u32(s ^ mix32_u32(tl.load(canvas_ptr + b * s_canvas).to(tl.uint32) ^ 0x27D4EB2F))
    s = mix32_u32(s ^ mix32_u32(tl.load(step_ptr + b * s_step).to(tl.uint32) ^ 0x165667B1))
    pos = tl.arange(0, BC)
    lo = mix32_u32(s ^ mix32_u32(pos.to(tl.uint32) ^ 0x68E31DA4))
    hi = mix32_u32(lo ^ 0x3C6EF372)
    key = ((hi & 0x3FFFFFFF).to(tl.int64) << 32) | lo.to(tl.int64)
    tl.store(out_ptr + b.to(tl.int64) * C + pos, key, mask=pos < C)


def derive_keys_triton(seed_B: torch.Tensor | int, canvas_B: torch.Tensor | int, step_B: torch.Tensor | int,
                       C: int) -> torch.Tensor:
    """Same contract and bits as `derive_keys_torch`, one launch on the first tensor argument's device."""
    dev = next(t.device for t in (seed_B, canvas_B, step_B) if isinstance(t, torch.Tensor))
    # ints become one-element device tensors read with stride 0 (a fill, not a host copy)
    ts = [t.reshape(-1).to(torch.int64) if isinstance(t, torch.Tensor)
          else torch.full((1,), int(t), dtype=torch.int64, device=dev) for t in (seed_B, canvas_B, step_B)]
    try:
        (B,) = torch.broadcast_shapes(*(t.shape for t in ts))
    except RuntimeError:
        lengths = [t.numel() for t in ts]
        raise ValueError(f"derive_keys: seed/canvas/step lengths {lengths} do not broadcast") from None
    out = torch.empty(B * C, dtype=torch.int64, device=dev)
    if B and C:
        strides = [0 if t.numel() == 1 else t.stride(0) for t in ts]
        runnable(_derive_keys_kernel)[(B,)](*ts, out, C, *strides, BC=next_pow2(C))
    return out


def selfcheck(device: torch.device) -> bool:
    """One-time bit-for-bit comparison of derive_keys' kernel against its reference on `device`."""
    seed = torch.tensor([0, 7, -1, 2**62 + 12345, -(2**40)], device=device)
    step = torch.arange(5, device=device) * 3 + 2
    return torch.equal(derive_keys_torch(seed, 4, step, 19), derive_keys_triton(seed, 4, step, 19))
