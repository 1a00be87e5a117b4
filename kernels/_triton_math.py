"""Device helpers shared by the Triton kernels (each a leaf: it calls only triton.language).

- `mix32_u32(x)`: the bijective 32-bit xorshift-multiply mixer of the sampler's noise hash, in wrapping uint32
  arithmetic; bit-identical to kernels/sampler.py's torch `mix32` (int64 masked to 32 bits).
- `tanh_f32(x)`: fp32 tanh from exp, sign(x) (1 - e) / (1 + e) with e = exp(-2|x|): no overflow, absolute
  error a few fp32 ulps of 1. The interpreter has no libdevice, so the kernels do not use its tanh.
- `softcap_f32(x, cap)`: the LM head's final softcap, tanh(x / cap) * cap. The logit epilogue and the
  sampler's head mode both call it, so the logits one writes and the other recomputes are the same bits.
- `dot_acc(a, b, acc, UPCAST, IEEE)`: acc + a @ b for the GEMM kernels' K loops; UPCAST takes fp32 inputs (the
  interpreter's bf16 dot is wrong; it also keeps the fp32 path exact), IEEE asks for full fp32 products.
- `gelu_tanh_mul_f32(g, u)`: gelu_tanh(g) * u in fp32, the expert GEMMs' epilogue.

Kernels call these by their module-level names; kernels/_triton_compat.py makes them callable from kernels run
in the interpreter too.
"""

from __future__ import annotations

from kernels._triton_compat import tl, triton


@triton.jit
def mix32_u32(x):
    x = x ^ (x >> 16)
    x = x * 0x21F0AAAD
    x = x ^ (x >> 15)
    x = x * 0x735A2D97
    return x ^ (x >> 15)


@triton.jit
def tanh_f32(x):
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def softcap_f32(x, cap):
    # tanh_f32 written out: a helper is a leaf (kernels/_triton_compat.py patches only the kernel's globals)
    z = x / cap
    e = tl.exp(-2.0 * tl.abs(z))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(z < 0, -t, t) * cap


@triton.jit
def dot_acc(a, b, acc, UPCAST: tl.constexpr, IEEE: tl.constexpr):
    if UPCAST:
        a, b = a.to(tl.float32), b.to(tl.float32)
    if IEEE:
        return tl.dot(a, b, acc, input_precision="ieee")
    return tl.dot(a, b, acc)


@triton.jit
def gelu_tanh_mul_f32(g, u):
    # gelu_tanh(g) = 0.5 g (1 + tanh(z)), tanh_f32 written out (a helper is a leaf)
    z = 0.7978845608028654 * (g + 0.044715 * g * g * g)
    e = tl.exp(-2.0 * tl.abs(z))
    t = (1.0 - e) / (1.0 + e)
    return 0.5 * g * (1.0 + tl.where(z < 0, -t, t)) * u
