"""The quantized kernels' cases for bench/compile_sm90.py: kernels/quant_linear.py at every dense projection's
shape and kernels/quant_moe.py at the expert shapes, for each scheme (kernels/dequant.py), at the launch sizes
bench/compile_sm90.py compiles the other kernels at."""

from __future__ import annotations

from collections.abc import Callable

import torch


def empty_quant(scheme: str, *shape: int, zero: bool = False):
    """An unfilled QuantTensor [*lead, N, K] as checkpoints hold it: fp8 with fp32 row scales, w4a16 in groups
    of 128 with bf16 scales (int8 zero points with `zero`), nvfp4 with fp8 scales per 16 and fp32 per row."""
    from kernels.dequant import QuantTensor

    k, e = shape[-1], (lambda *c, dt: torch.empty(*shape[:-1], *c, dtype=dt))
    if scheme == "fp8":
        return QuantTensor(scheme, e(k, dt=torch.float8_e4m3fn), e(dt=torch.float32), k, k)
    g = 128 if scheme == "w4a16" else 16
    data = e(-(-k // 8), dt=torch.int32) if scheme == "w4a16" else e(-(-k // 2), dt=torch.uint8)
    scale = e(-(-k // g), dt=torch.bfloat16 if scheme == "w4a16" else torch.float8_e4m3fn)
    return QuantTensor(scheme, data, scale, k, g, zero=e(-(-k // g), dt=torch.int8) if zero else None,
                       global_scale=e(dt=torch.float32) if scheme == "nvfp4" else None)


def quant_cases(cfg, canvases: tuple[int, ...]) -> list[tuple[str, Callable]]:
    """quant_linear at every dense projection's [N, K] and quant_moe at the expert shapes, per scheme (w4a16
    with and without zero points), at each canvas count's tokens (M = T = 256 and 2048 by default)."""
    from functools import partial as P

    from kernels.quant_linear import quant_linear_triton
    from kernels.quant_moe import quant_moe_triton

    t, g = cfg.text, torch.Generator().manual_seed(0)
    H, E, k, I = t.hidden_size, t.num_experts, t.top_k_experts, t.moe_intermediate_size  # noqa: E741
    Hq, bf = t.num_attention_heads, torch.bfloat16
    dense = {"gate/up": (t.intermediate_size, H), "down": (H, t.intermediate_size)}
    for i in range(t.num_hidden_layers):  # v has k's shape (full-attention layers have only k)
        D, kv = t.layer_head_dim(i), t.layer_kv_heads(i)
        dense |= {f"q D={D}": (Hq * D, H), f"k/v D={D}": (kv * D, H), f"o D={D}": (H, Hq * D)}
    out = []
    for scheme, zero in (("fp8", False), ("w4a16", False), ("w4a16", True), ("nvfp4", False)):
        name = scheme + (" zero points" if zero else "")
        moe_w = (empty_quant(scheme, E, 2 * I, H, zero=zero), empty_quant(scheme, E, H, I, zero=zero))
        for T in (c * cfg.canvas_length for c in canvases):
            for proj, (n, kk) in dense.items():
                out.append((f"quant_linear {name} {proj} [{n}, {kk}] M={T}",
                            P(quant_linear_triton, torch.empty(T, kk, dtype=bf), empty_quant(scheme, n, kk,
                                                                                            zero=zero))))
            idx = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)])
            out.append((f"quant_moe {name} T={T}", P(quant_moe_triton, torch.empty(T, H, dtype=bf), idx,
                                                     torch.rand(T, k, generator=g), *moe_w)))
    return out
