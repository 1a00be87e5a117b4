"""Kernel microbenchmarks at DiffusionGemma's real shapes, for bench/gpu.py (its section 2): each Triton
kernel against its torch reference (and PyTorch's SDPA for attention, its grouped GEMM for the MoE) and the
sampler's column-chunk sweep; the tile lists the fused_moe and canvas_attention sweeps try (bench/gpu_tiles.py
runs them, bench/compile_sm90.py compiles them); the timing helpers every GPU bench uses.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kernels  # noqa: E402
import model.moe  # noqa: E402
from kernels.canvas_attention import (  # noqa: E402
    canvas_attention_sdpa,
    canvas_attention_torch,
    canvas_attention_triton,
)
from kernels.fused_moe import fused_moe_grouped, fused_moe_torch, fused_moe_triton  # noqa: E402
from kernels.gelu_mul import gelu_mul_torch, gelu_mul_triton  # noqa: E402
from kernels.logit_epilogue import logit_epilogue_torch, logit_epilogue_triton  # noqa: E402
from kernels.moe_align import align_tokens, align_tokens_triton  # noqa: E402
from kernels.norm_rope import norm_rope_torch, norm_rope_triton  # noqa: E402
from kernels.rms_norm import (  # noqa: E402
    rms_norm_pair_torch,
    rms_norm_pair_triton,
    rms_norm_torch,
    rms_norm_triton,
)
from kernels.router import route_torch, route_triton  # noqa: E402
from kernels.sampler import (  # noqa: E402
    fused_sample_torch,
    fused_sample_triton,
    head_sample_torch,
    head_sample_triton,
)
from kernels.softmax import softmax_torch, softmax_triton  # noqa: E402
from kernels.stream_keys import derive_keys_torch, derive_keys_triton  # noqa: E402


# ---- timing -----------------------------------------------------------------------------------------------
def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def ms(dev, fn, *args, reps=5) -> float:
    """Median milliseconds of fn(*args)."""
    return 1e3 * timeit(lambda: fn(*args), dev, reps=reps)


def timeit(fn, dev, reps=5, warmup=1) -> float:
    """Median seconds of fn() over reps (after warmup), device-synchronised."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        sync(dev)
        t = time.perf_counter()
        fn()
        sync(dev)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


# ---- 2. kernel microbenchmarks ----------------------------------------------------------------------------
def moe_weights(dev, cfg, g):
    """Random bf16 expert weights at the config's real shapes -> (gate_up_EFH, down_EHI)."""
    t = cfg.text
    E, H, Im = t.num_experts, t.hidden_size, t.moe_intermediate_size
    gu = (torch.randn(E, 2 * Im, H, generator=g) * 0.02).to(dev, torch.bfloat16)
    dn = (torch.randn(E, H, Im, generator=g) * 0.02).to(dev, torch.bfloat16)
    return gu, dn


def moe_tokens(dev, cfg, g, T):
    """T random tokens routed top-k -> (x_TH, topk_idx_Tk, topk_w_Tk, bytes of the experts they touch)."""
    t = cfg.text
    H, E, k, Im = t.hidden_size, t.num_experts, t.top_k_experts, t.moe_intermediate_size
    x = torch.randn(T, H, generator=g).to(dev, torch.bfloat16)
    idx = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)]).to(dev)
    w = torch.rand(T, k, generator=g).to(dev)
    return x, idx, w, int(torch.unique(idx).numel()) * (3 * Im * H) * 2


def sdpa_gqa_attention(q, kc, vc, vis, kn, vn):
    """The enable_gqa form of SDPA with the boolean mask (session 8's timing): with a mask, CUDA's SDPA takes
    GQA only in its math backend, so this row shows what that fallback costs, not a fused kernel."""
    B, C = q.shape[0], q.shape[2]
    mask = torch.cat([vis, vis.new_ones(B, C)], dim=1)[:, None, None, :]
    return torch.nn.functional.scaled_dot_product_attention(
        q, torch.cat([kc, kn], dim=2), torch.cat([vc, vn], dim=2), attn_mask=mask, scale=1.0, enable_gqa=True)


def sdpa_rows(dev, args, ref):
    """kernels.canvas_attention_sdpa (K/V heads repeated, boolean mask) under SDPA's default choice and pinned
    to each backend (a backend that rejects the shape records its error), plus the enable_gqa form."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    row = {}
    forms = [("sdpa", canvas_attention_sdpa, None), ("sdpa_gqa", sdpa_gqa_attention, None)]
    pinned = (SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION,
              SDPBackend.MATH)
    forms += [(f"sdpa_{b.name.lower()}", canvas_attention_sdpa, b) for b in pinned]
    for name, fn, backend in forms:
        try:
            with sdpa_kernel(backend) if backend is not None else contextlib.nullcontext():
                row[f"{name}_max_diff"] = (fn(*args).float() - ref).abs().max().item()
                row[f"{name}_ms"] = ms(dev, fn, *args)
        except Exception as e:  # noqa: BLE001 - a backend may reject the shape; record why
            row[f"{name}_error"] = f"{type(e).__name__}: {e}"[:200]
    return row


def bench_kernels(dev, tiny, cfg):
    t = cfg.text
    H, E, k, Im, V = t.hidden_size, t.num_experts, t.top_k_experts, t.moe_intermediate_size, t.vocab_size
    C = cfg.canvas_length
    use_triton = dev.type == "cuda"
    out = []
    g = torch.Generator(device="cpu").manual_seed(0)
    gu, dn = moe_weights(dev, cfg, g)
    for canv in (1, 8):
        T = canv * C
        x, idx, w, wbytes = moe_tokens(dev, cfg, g, T)
        row = {"kernel": "fused_moe", "shape": f"T={T} H={H} E={E} k={k} Im={Im}", "weight_bytes": wbytes,
               "torch_ms": ms(dev, fused_moe_torch, x, idx, w, gu, dn),
               "model_moe_forward_ms": ms(dev, model.moe.moe_forward, x, idx, w, gu, dn)}
        if use_triton:
            row["triton_ms"] = ms(dev, fused_moe_triton, x, idx, w, gu, dn, reps=10)
            row["triton_weight_GBps"] = wbytes / row["triton_ms"] / 1e6
        try:  # PyTorch's grouped GEMM (CUTLASS on the GPU): the candidate beside our Triton GEMMs
            ref = fused_moe_torch(x, idx, w, gu, dn).float()
            row["grouped_max_diff"] = (fused_moe_grouped(x, idx, w, gu, dn).float() - ref).abs().max().item()
            row["grouped_ms"] = ms(dev, fused_moe_grouped, x, idx, w, gu, dn, reps=10)
            row["grouped_weight_GBps"] = wbytes / row["grouped_ms"] / 1e6
        except Exception as e:  # noqa: BLE001 - e.g. a torch without grouped_mm on this card
            row["grouped_error"] = f"{type(e).__name__}: {e}"[:200]
        out.append(row)
    gu = dn = None
    for i in sorted({t.layer_types.index(lt) for lt in set(t.layer_types)}):
        K, D, Hq = t.layer_kv_heads(i), t.layer_head_dim(i), t.num_attention_heads
        for B in (1, 8):
            S = 64 if tiny else 1024
            mk = lambda *s: (torch.randn(*s, generator=g) * 0.1).to(dev, torch.bfloat16)  # noqa: E731
            q, kc, vc = mk(B, Hq, C, D), mk(B, K, S, D), mk(B, K, S, D)
            kn, vn = mk(B, K, C, D), mk(B, K, C, D)
            vis = torch.ones(B, S, dtype=torch.bool, device=dev)
            args = (q, kc, vc, vis, kn, vn)
            row = {"kernel": "canvas_attention", "shape": f"B={B} H={Hq} K={K} C={C} S={S} D={D}",
                   "torch_ms": ms(dev, canvas_attention_torch, *args)}
            # PyTorch's SDPA, per backend: a candidate for the shapes where the Triton kernel measured slower
            # than the eager reference
            row |= sdpa_rows(dev, args, canvas_attention_torch(*args).float())
            if use_triton:
                row["triton_ms"] = ms(dev, canvas_attention_triton, *args, reps=10)
                fl = 4 * B * Hq * C * (S + C) * D
                row["triton_TFLOPs"] = fl / row["triton_ms"] / 1e9
            out.append(row)
    for N in (C, 8 * C):
        logits = (torch.randn(N, V, generator=g) * 5).to(dev)
        inv_t = torch.full((N,), 1.5, device=dev)
        keys = kernels.derive_keys(torch.arange(N), 0, 0, 1).to(dev)
        row = {"kernel": "fused_sample", "shape": f"N={N} V={V}",
               "torch_ms": ms(dev, fused_sample_torch, logits, inv_t, keys)}
        if use_triton:
            row["triton_ms"] = ms(dev, fused_sample_triton, logits, inv_t, keys, reps=10)
            row["triton_GBps"] = N * V * 4 / row["triton_ms"] / 1e6
            # as the engine calls it (engine/sampler.py RowNoise): statistics of every row without sampling,
            # then the Gumbel sample of the kept rows only (1 in 32 here: about 8 of a canvas's 256)
            none = torch.zeros(N, dtype=torch.bool, device=dev)
            keep = torch.arange(N, device=dev) % 32 == 0
            row["engine_stats_ms"] = ms(dev, fused_sample_triton, logits, inv_t, keys, none, reps=10)
            row["engine_stats_GBps"] = N * V * 4 / row["engine_stats_ms"] / 1e6
            row["engine_sample_only_ms"] = ms(dev, functools.partial(fused_sample_triton, sample_only=True),
                                              logits, inv_t, keys, keep, reps=10)
        out.append(row)
        logits = None
        if use_triton:
            out.append(head_sample_chunks(dev, cfg, g, N))
    out += bench_norms(dev, cfg, g)
    out += bench_step_ops(dev, cfg, g)
    for r in out:
        if "triton_ms" in r:
            r["speedup_vs_torch"] = r["torch_ms"] / r["triton_ms"]
    return out


# (block_m, block_n, block_k, num_warps, num_stages) around the default (None, 64, 64, 4, None); None: the
# launcher's choice. block_m: at one canvas the default is 16 rows for about 16 rows per expert, so an expert
# with more rows owns two blocks that each read its weights; 32 trades MMA work for one read. At 8 canvases
# (about 128 rows per expert) the MoE measured 1.4 ms a layer against a bound of 0.51 ms (every expert's
# 1.52 GB at 3 TB/s; its 195 GFLOP take 0.25 ms): the same 34-37% of copy bandwidth as at one canvas, so both
# sizes want more bytes in flight per program. The first two are the shapes public H100 tunings of grouped
# MoE GEMMs of this size pick (one [M, 2N] gate+up tile there is our two [M, N] tiles): 32 x 2*128 x 128 with
# 8 warps near 256 tokens, 128 x 2*128 x 64 with 8 warps and 4 stages near 2048.
# Most promising first: the section stops at its time budget. Every entry compiles for sm_90 and fits the
# H100's shared memory (bench/compile_sm90.py, tests/kernels/test_sm90_compile.py; 2026-11-27 that dropped 8
# entries with block_m None, which at 8 canvases means 64-row blocks and needed 240-480 KiB); the explicit
# block_m keeps each entry's shared memory the same at both sizes. block_m >= 64 compiles to Hopper's wgmma,
# 16 and 32 to mma.sync.
MOE_TILES = [
    (32, 128, 128, 8, 3), (128, 128, 64, 8, 4), (None, 64, 64, 4, None),
    (16, 64, 128, 4, 4), (64, 64, 128, 4, 3), (16, 128, 128, 4, 3), (128, 128, 64, 8, 3),
    (32, 64, 128, 4, 3), (64, 128, 64, 4, 3), (16, 64, 256, 4, 3), (128, 64, 128, 8, 3),
    (16, 128, 64, 4, 4), (64, 64, 64, 4, 4), (32, 64, 256, 4, 3), (128, 64, 64, 4, 4),
    (16, 32, 256, 4, 4), (64, 128, 64, 8, 4), (32, 128, 128, 4, 3), (16, 256, 64, 8, 3),
    (64, 256, 64, 8, 3),
]

# The down GEMM's own (block_n, block_k, num_warps, num_stages), tried at each size with everything else
# pinned to the fastest MOE_TILES entry measured before it: the two GEMMs have transposed shapes (gate_up
# reads K = 2816 for 2 x 704 outputs, down K = 704 for 2816), so the best shared tile need not suit down.
# Short K loops (704 / 64 = 11 steps) spend a larger share in the pipeline's fill, hence wider N and deeper K
# here. Every entry fits the H100's shared memory at 128-row blocks (the largest block_m above).
MOE_DOWN_TILES = [(128, 64, 4, 4), (64, 128, 4, 3), (128, 128, 8, 3), (256, 64, 8, 3), (64, 64, 4, 5),
                  (32, 128, 4, 4)]


# (block_m, block_n, block_dv, num_splits, num_warps) per head_dim, the launcher's default first (None: its
# choice; splits None is 1): at 8 canvases attention measured about 1 ms a layer (eager torch and Triton
# alike), more than the whole roofline at 30 layers. From the sm_90 compile (bench/compile_sm90.py): the
# default 64-row tiles at head_dim 256 take 222 registers, one program (8 warps) per SM, and at one canvas the
# grid is only 64 programs for 132 SMs. Three ways to fill the card are swept: key splits (2 or 4 ranges
# merged by a second kernel; wgmma kept), 32-row tiles (128 programs, mma.sync instead of wgmma) and 4-warp
# tiles (two programs per SM: 178-180 registers with mma.sync; the one 4-warp wgmma tile, 64 x 32, at 254
# without spilling). At head_dim 512 the default 32-row tiles use mma.sync and 64-row ones wgmma. (64, 128,
# 256) at head_dim 256 needed 288 KiB and was dropped; the other 4-warp tiles tried at 255 registers were left
# out (one step from spilling). Most promising first: the section stops at its time budget.
ATTN_TILES = {
    256: [(None, None, None, None, None), (None, None, None, 2, None), (32, 64, 256, None, None),
          (64, 32, 256, None, 4), (None, None, None, 4, None), (32, 64, 256, None, 4),
          (128, 64, 256, None, None), (64, 32, 256, None, None), (128, 32, 256, None, None),
          (64, 64, 128, None, None), (32, 32, 256, None, None)],
    512: [(None, None, None, None, None), (None, None, None, 2, None), (64, 32, 256, None, None),
          (32, 32, 256, None, 4), (32, 32, 512, None, None), (32, 64, 256, None, None),
          (16, 64, 512, None, None), (64, 64, 128, None, None), (64, 32, 128, None, None)],
}


# Column chunks per row for the head-mode sampler's statistics pass: one program per row gives a canvas 256
# programs for 132 SMs, each with one 8 KiB tile in flight (no cp.async in its sm_90 build), and session 2
# measured 0.43-0.78 TB/s for this pass.
SAMPLER_CHUNKS = (1, 2, 4, 8, 16)


def head_sample_chunks(dev, cfg, g, N):
    """The engine's statistics pass (head mode: bf16 LM head output, softcap and temperature in the kernel,
    no row sampled) over SAMPLER_CHUNKS column chunks: ms and GB/s of the raw logits per chunk count."""
    t, C = cfg.text, cfg.canvas_length
    V = t.vocab_size
    x = (torch.randn(N, V, generator=g) * 20).to(dev, torch.bfloat16)
    temp = torch.full((N // C,), 0.6, device=dev)
    keys = kernels.derive_keys(torch.arange(N // C), 0, 0, C).to(dev)
    none = torch.zeros(N, dtype=torch.bool, device=dev)
    cap = t.final_logit_softcapping
    row = {"kernel": "head_sample", "shape": f"N={N} V={V} (statistics, no sample)",
           "torch_ms": ms(dev, head_sample_torch, x, cap, temp, keys, none)}
    one = head_sample_triton(x, cap, temp, keys, none)
    for c in SAMPLER_CHUNKS:
        fn = functools.partial(head_sample_triton, chunks=c)
        got = fn(x, cap, temp, keys, none)
        row[f"chunks{c}_same_argmax"] = bool(torch.equal(got[0], one[0]))
        row[f"chunks{c}_ms"] = ms(dev, fn, x, cap, temp, keys, none, reps=10)
        row[f"chunks{c}_GBps"] = N * V * 2 / row[f"chunks{c}_ms"] / 1e6
    row["triton_ms"] = row["chunks1_ms"]
    return row


def bench_norms(dev, cfg, g):
    """The block tail (residual + norm(d + m)) * scalar over the hidden size, and q norm + RoPE per head."""
    t, C = cfg.text, cfg.canvas_length
    H, Hq = t.hidden_size, t.num_attention_heads
    use_triton = dev.type == "cuda"
    mk = lambda *s: torch.randn(*s, generator=g).to(dev, torch.bfloat16)  # noqa: E731
    out = []
    for canv in (1, 8):
        T = canv * C
        x, a, r, w = mk(T, H), mk(T, H), mk(T, H), mk(H)
        s = torch.ones(1, device=dev, dtype=torch.bfloat16)
        kw = {"add": a, "residual": r, "scale": s}
        row = {"kernel": "rms_norm", "shape": f"T={T} H={H} (+add, +residual, *scale)",
               "torch_ms": ms(dev, lambda x=x, w=w, kw=kw: rms_norm_torch(x, w, 1e-6, **kw))}
        if use_triton:
            row["triton_ms"] = ms(dev, lambda x=x, w=w, kw=kw: rms_norm_triton(x, w, 1e-6, **kw), reps=10)
            row["triton_GBps"] = 4 * T * H * 2 / row["triton_ms"] / 1e6
        out.append(row)
        for D in sorted({t.layer_head_dim(i) for i in range(t.num_hidden_layers)}):
            q, wd = mk(canv, C, Hq, D), mk(D)
            cos, sin = mk(canv, C, D), mk(canv, C, D)
            row = {"kernel": "norm_rope", "shape": f"B={canv} C={C} heads={Hq} D={D}",
                   "torch_ms": ms(dev, norm_rope_torch, q, wd, 1e-6, cos, sin)}
            if use_triton:
                row["triton_ms"] = ms(dev, norm_rope_triton, q, wd, 1e-6, cos, sin, reps=10)
                row["triton_GBps"] = 2 * q.numel() * 2 / row["triton_ms"] / 1e6
            out.append(row)
    return out


def bench_step_ops(dev, cfg, g):
    """The step's smaller kernels at 1 and 8 canvases against their torch references: the logit epilogue and
    the self-conditioning softmax (GB/s of their one-pass traffic), the router, the MoE routing layout, the
    stream keys, the dense MLP's gated GELU, the pre-feed-forward norm pair."""
    t, C = cfg.text, cfg.canvas_length
    V, H, E, k = t.vocab_size, t.hidden_size, t.num_experts, t.top_k_experts
    use_triton = dev.type == "cuda"
    out = []

    def row(name, shape, ref, tri, args, nbytes=None):
        r = {"kernel": name, "shape": shape, "torch_ms": ms(dev, ref, *args)}
        if use_triton:
            r["triton_ms"] = ms(dev, tri, *args, reps=10)
            if nbytes:
                r["triton_GBps"] = nbytes / r["triton_ms"] / 1e6
        out.append(r)

    for canv in (1, 8):
        N = canv * C
        x = (torch.randn(N, V, generator=g) * 20).to(dev, torch.bfloat16)
        temp = torch.full((canv,), 0.6, device=dev)
        x3 = x.view(canv, C, V)
        row("logit_epilogue", f"N={N} V={V} (+temperature, +bf16 copy)", logit_epilogue_torch,
            logit_epilogue_triton, (x3, t.final_logit_softcapping, temp, torch.bfloat16), N * V * 8)
        row("softmax", f"N={N} V={V} bf16 -> bf16", softmax_torch, softmax_triton, (x, torch.bfloat16),
            N * V * 6)
        x = x3 = None
        r_TH = torch.randn(N, H, generator=g).to(dev, torch.bfloat16)
        sc = torch.ones(H, device=dev, dtype=torch.bfloat16)
        pes = torch.ones(E, device=dev, dtype=torch.bfloat16)
        proj = (torch.randn(E, H, generator=g) * H**-0.5).to(dev, torch.bfloat16)
        row("route", f"T={N} H={H} E={E} k={k}", route_torch, route_triton, (r_TH, sc, proj, pes, k, 1e-6))
        idx = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(N)]).to(dev)
        bm = 16 if canv == 1 else 64  # the launcher's choice at these sizes
        row("moe_align", f"T={N} E={E} k={k} block_m={bm}", align_tokens, align_tokens_triton, (idx, E, bm))
        seeds = torch.arange(canv, device=dev)
        row("derive_keys", f"B={canv} C={C}", derive_keys_torch, derive_keys_triton, (seeds, 0, 3, C))
        I = t.intermediate_size  # noqa: E741
        gate, up = (torch.randn(N, I, generator=g).to(dev, torch.bfloat16) for _ in range(2))
        row("gelu_mul", f"T={N} I={I}", gelu_mul_torch, gelu_mul_triton, (gate, up), N * I * 6)
        row("rms_norm_pair", f"T={N} H={H}", rms_norm_pair_torch, rms_norm_pair_triton, (r_TH, sc, sc, 1e-6),
            N * H * 6)
    return out
