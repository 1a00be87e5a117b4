"""Canvas attention (the decoder pass): torch reference, its PyTorch-SDPA form, Triton kernel, launcher.
Reference model: `DiffusionGemmaDecoderTextAttention` in https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/models/diffusion_gemma/modeling_diffusion_gemma.py

Canvas queries attend to the visible cached context keys plus every canvas key (bidirectional, no causal
mask). The caller encodes left padding and sliding windows in ctx_visible_BS (a sliding decoder layer sees
context key j iff j >= length - (W-1)), so this op only knows "visible or not". GQA: query head h reads KV
head h // (H/K). Scores and softmax in fp32; masked keys get a finite large negative score so a row with
nothing visible stays finite (uniform) instead of NaN.

Triton kernel: flash-attention with an online softmax. One program owns BLOCK_M rows of the G = H/K query
heads that share one KV head (rows r = g*C + c), so each K/V tile is loaded once for all G heads, and one
BLOCK_DV slice of the output. Its query tile [BLOCK_M, D] is loaded once and stays in registers; the keys
run in two loops, the cached context (with its visibility mask) and then the canvas (all visible), so no
block mixes the two. Head_dim 512 (the 5 global layers, which FlashAttention rejects) bounds the
accumulator by splitting the output D across programs (BLOCK_DV 256), which recomputes the scores.

Split keys (num_splits > 1): at one canvas the grid is small (head_dim 256: 64 programs of one per SM on a
132-SM H100, bench/compile_sm90.py), so the key sequence [context | canvas] may be cut into contiguous
ranges, one program each. Each writes its unnormalised fp32 output with its running max and sum, and a
second kernel merges the ranges (out = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s), the same algebra
as the online softmax within a program. One split is the single-kernel path, unchanged.

Legend: B batch, H query heads, K KV heads, G = H/K, C canvas length, S context (cache) length, D head dim.
"""

from __future__ import annotations

import torch

from kernels._triton_compat import interpret_mode, next_pow2, runnable, tl, triton

MASK_FILL = -1.0e30  # finite: a fully masked row softmaxes to uniform, never NaN


# ---- torch reference: the spec, and the CPU path ----------------------------------------------------------
def canvas_attention_torch(q_BHCD: torch.Tensor, k_ctx_BKSD: torch.Tensor, v_ctx_BKSD: torch.Tensor,
                           ctx_visible_BS: torch.Tensor, k_can_BKCD: torch.Tensor, v_can_BKCD: torch.Tensor,
                           scale: float = 1.0, *, ctx_rows_B: torch.Tensor | None = None) -> torch.Tensor:
    """Eager-attention precision (as the HF reference's eager path): QK^T in the input dtype, softmax in
    fp32, probabilities cast back, PV in the input dtype. Returns o_BHCD in q's dtype.
    ctx_rows_B: row b's context is row ctx_rows_B[b] of k_ctx / v_ctx (a cache with more slots than rows)."""
    if ctx_rows_B is not None:
        k_ctx_BKSD = k_ctx_BKSD.index_select(0, ctx_rows_B)
        v_ctx_BKSD = v_ctx_BKSD.index_select(0, ctx_rows_B)
    B, H, C, D = q_BHCD.shape
    K = k_can_BKCD.shape[1]
    G = H // K
    k_BKJD = torch.cat([k_ctx_BKSD, k_can_BKCD], dim=2)
    v_BKJD = torch.cat([v_ctx_BKSD, v_can_BKCD], dim=2)
    vis_BJ = torch.cat([ctx_visible_BS.bool(), ctx_visible_BS.new_ones(B, C, dtype=torch.bool)], dim=1)
    q_BKRD = q_BHCD.reshape(B, K, G * C, D)  # rows r = g*C + c of the G heads sharing KV head
    scores = (q_BKRD @ k_BKJD.transpose(-1, -2)).float() * scale
    scores = scores.masked_fill(~vis_BJ[:, None, None, :], MASK_FILL)
    p = torch.softmax(scores, dim=-1).to(v_BKJD.dtype)
    return (p @ v_BKJD).reshape(B, H, C, v_BKJD.shape[-1]).to(q_BHCD.dtype)


def canvas_attention_sdpa(q_BHCD: torch.Tensor, k_ctx_BKSD: torch.Tensor, v_ctx_BKSD: torch.Tensor,
                          ctx_visible_BS: torch.Tensor, k_can_BKCD: torch.Tensor, v_can_BKCD: torch.Tensor,
                          scale: float = 1.0, *, ctx_rows_B: torch.Tensor | None = None) -> torch.Tensor:
    """The same op through PyTorch's fused `scaled_dot_product_attention`: a GPU candidate for the shapes
    where the Triton kernel measured slower (bench/gpu.py times it per SDPA backend); not dispatched yet.
    K/V heads are repeated to the query heads instead of passing enable_gqa, because with a mask CUDA's SDPA
    only takes GQA in its math backend (which materialises the scores like the eager form). Canvas keys are
    always visible, so no row is fully masked and the -inf fill agrees with the reference's -1e30."""
    if ctx_rows_B is not None:
        k_ctx_BKSD = k_ctx_BKSD.index_select(0, ctx_rows_B)
        v_ctx_BKSD = v_ctx_BKSD.index_select(0, ctx_rows_B)
    B, H, C, _ = q_BHCD.shape
    G = H // k_can_BKCD.shape[1]
    k_BHJD = torch.cat([k_ctx_BKSD, k_can_BKCD], dim=2).repeat_interleave(G, dim=1)  # head h reads h // G
    v_BHJD = torch.cat([v_ctx_BKSD, v_can_BKCD], dim=2).repeat_interleave(G, dim=1)
    vis_B11J = torch.cat([ctx_visible_BS, ctx_visible_BS.new_ones(B, C)], dim=1)[:, None, None, :]
    return torch.nn.functional.scaled_dot_product_attention(q_BHCD, k_BHJD, v_BHJD, attn_mask=vis_B11J,
                                                            scale=scale)


# ---- Triton kernel ----------------------------------------------------------------------------------------
@triton.jit
def _online_block(q, kt, v, m_i, l_i, acc, key_ok, vis, scale, UPCAST: tl.constexpr, IEEE: tl.constexpr):
    """One key block of the online softmax: scores q @ kt, invisible keys at -1e30 (finite, as the
    reference's mask fill), keys past the end at -inf (no weight at all), then the running max, sum and
    output rescaled and accumulated."""
    if UPCAST:  # the interpreter's bf16 dot is wrong; fp32 inputs stay exact
        kt = kt.to(tl.float32)
    if IEEE:
        scores = tl.dot(q, kt, input_precision="ieee") * scale
    else:
        scores = tl.dot(q, kt) * scale
    scores = tl.where(vis[None, :], scores, -1.0e30)
    scores = tl.where(key_ok[None, :], scores, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(scores, 1))
    alpha = tl.exp(m_i - m_new)
    p = tl.exp(scores - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    if UPCAST:
        v = v.to(tl.float32)
        pv = p
    else:
        pv = p.to(v.dtype)
    if IEEE:
        acc = tl.dot(pv, v, acc, input_precision="ieee")
    else:
        acc = tl.dot(pv, v, acc)
    return m_new, l_i, acc


@triton.jit
def _kv_tiles(k_base, v_base, j64, ok, sk, sv, dq, dq_ok, dv, dv_ok):
    """Keys j's K^T [D, BN] and V [BN, BDV] tiles from one source (the cache or the canvas, each with its own
    base and row stride); keys past the source's end (not ok) read 0."""
    kt = tl.load(k_base + j64[None, :] * sk + dq[:, None], mask=ok[None, :] & dq_ok[:, None], other=0.0)
    v = tl.load(v_base + j64[:, None] * sv + dv[None, :], mask=ok[:, None] & dv_ok[None, :], other=0.0)
    return kt, v


@triton.jit
def _canvas_attn_kernel(q_ptr, kc_ptr, vc_ptr, vis_ptr, kn_ptr, vn_ptr, o_ptr, rows_ptr, ml_ptr,
                        sq_b, sq_h, sq_c, skc_b, skc_k, skc_s, svc_b, svc_k, svc_s, svis_b,
                        skn_b, skn_k, skn_c, svn_b, svn_k, svn_c, so_b, so_h, so_c,
                        K, G, C, S, D, scale, N_DV, KEYS_PER_SPLIT, ROWS_ALL,
                        BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr,
                        UPCAST: tl.constexpr, IEEE: tl.constexpr, HAS_ROWS: tl.constexpr,
                        SPLIT: tl.constexpr):
    pid_m = tl.program_id(0)
    bk = tl.program_id(1)
    pid_d = tl.program_id(2) % N_DV
    split = tl.program_id(2) // N_DV
    # this program's keys: [lo, hi) of the sequence [context (S) | canvas (C)]
    lo = split * KEYS_PER_SPLIT
    hi = tl.minimum(lo + KEYS_PER_SPLIT, S + C)
    b = (bk // K).to(tl.int64)
    kv = (bk % K).to(tl.int64)
    bc = b  # the row's context slot in k_ctx / v_ctx
    if HAS_ROWS:
        bc = tl.load(rows_ptr + b).to(tl.int64)
    rows = pid_m * BM + tl.arange(0, BM)
    row_ok = rows < G * C
    h = kv * G + (rows // C)
    c = rows % C
    dq = tl.arange(0, BD)
    dq_ok = dq < D
    dv = pid_d * BDV + tl.arange(0, BDV)
    dv_ok = dv < D
    # the query tile stays in registers for every key block
    q_row = q_ptr + b * sq_b + h.to(tl.int64) * sq_h + c.to(tl.int64) * sq_c
    q = tl.load(q_row[:, None] + dq[None, :], mask=row_ok[:, None] & dq_ok[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    m_i = tl.full((BM,), -1.0e30, tl.float32)  # finite start: a masked (-1e30) block cannot give inf - inf
    l_i = tl.zeros((BM,), tl.float32)
    acc = tl.zeros((BM, BDV), tl.float32)
    # cached context keys, each visible or not for this row (padding, sliding window)
    kc_base = kc_ptr + bc * skc_b + kv * skc_k
    vc_base = vc_ptr + bc * svc_b + kv * svc_k
    ctx_hi = tl.minimum(hi, S)
    for j0 in range(lo, ctx_hi, BN):
        j = j0 + tl.arange(0, BN)
        ok = j < ctx_hi
        vis = tl.load(vis_ptr + b * svis_b + j, mask=ok, other=0) != 0
        kt, v = _kv_tiles(kc_base, vc_base, j.to(tl.int64), ok, skc_s, svc_s, dq, dq_ok, dv, dv_ok)
        m_i, l_i, acc = _online_block(q, kt, v, m_i, l_i, acc, ok, vis, scale, UPCAST, IEEE)
    # the canvas itself: every key visible (bidirectional)
    kn_base = kn_ptr + b * skn_b + kv * skn_k
    vn_base = vn_ptr + b * svn_b + kv * svn_k
    can_hi = hi - S
    for j0 in range(tl.maximum(lo, S) - S, can_hi, BN):
        j = j0 + tl.arange(0, BN)
        ok = j < can_hi
        kt, v = _kv_tiles(kn_base, vn_base, j.to(tl.int64), ok, skn_c, svn_c, dq, dq_ok, dv, dv_ok)
        m_i, l_i, acc = _online_block(q, kt, v, m_i, l_i, acc, ok, ok, scale, UPCAST, IEEE)
    if SPLIT:  # unnormalised partials into o_ptr = fp32 [splits, B*H*C, D], ml_ptr = [2, splits, B*H*C]
        r = (split * ROWS_ALL + (b * K + kv) * G * C + rows).to(tl.int64)  # (b*H + h)*C + c, by split
        tl.store(o_ptr + r[:, None] * D + dv[None, :], acc, mask=row_ok[:, None] & dv_ok[None, :])
        first_dv = row_ok & ((rows * 0 + pid_d) == 0)  # every output-D program has the same max and sum
        tl.store(ml_ptr + r, m_i, mask=first_dv)
        tl.store(ml_ptr + tl.num_programs(2) // N_DV * ROWS_ALL + r, l_i, mask=first_dv)
    else:
        out = acc / l_i[:, None]
        o_row = o_ptr + b * so_b + h.to(tl.int64) * so_h + c.to(tl.int64) * so_c
        tl.store(o_row[:, None] + dv[None, :], out.to(o_ptr.dtype.element_ty),
                 mask=row_ok[:, None] & dv_ok[None, :])


@triton.jit
def _merge_splits_kernel(part_ptr, ml_ptr, o_ptr, H, C, D, so_b, so_h, so_c, ROWS_ALL,
                         NS: tl.constexpr, BR: tl.constexpr, BDV: tl.constexpr):
    """out[row] = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s over the key ranges, M = max_s m_s."""
    rows = tl.program_id(0) * BR + tl.arange(0, BR)
    row_ok = rows < ROWS_ALL
    dv = tl.program_id(1) * BDV + tl.arange(0, BDV)
    dv_ok = dv < D
    r64 = rows.to(tl.int64)
    m_max = tl.full((BR,), -1.0e30, tl.float32)
    for s in tl.static_range(NS):
        m_max = tl.maximum(m_max, tl.load(ml_ptr + s * ROWS_ALL + r64, mask=row_ok, other=-1.0e30))
    num = tl.zeros((BR, BDV), tl.float32)
    den = tl.zeros((BR,), tl.float32)
    for s in tl.static_range(NS):
        m_s = tl.load(ml_ptr + s * ROWS_ALL + r64, mask=row_ok, other=-1.0e30)
        l_s = tl.load(ml_ptr + (NS + s) * ROWS_ALL + r64, mask=row_ok, other=0.0)
        w = tl.exp(m_s - m_max)
        den += w * l_s
        acc = tl.load(part_ptr + (s * ROWS_ALL + r64)[:, None] * D + dv[None, :],
                      mask=row_ok[:, None] & dv_ok[None, :], other=0.0)
        num += w[:, None] * acc
    out = num / tl.where(row_ok, den, 1.0)[:, None]
    b = (rows // (H * C)).to(tl.int64)
    h = ((rows // C) % H).to(tl.int64)
    c = (rows % C).to(tl.int64)
    o_row = o_ptr + b * so_b + h * so_h + c * so_c
    tl.store(o_row[:, None] + dv[None, :], out.to(o_ptr.dtype.element_ty),
             mask=row_ok[:, None] & dv_ok[None, :])


def canvas_attention_triton(q_BHCD: torch.Tensor, k_ctx_BKSD: torch.Tensor, v_ctx_BKSD: torch.Tensor,
                            ctx_visible_BS: torch.Tensor, k_can_BKCD: torch.Tensor, v_can_BKCD: torch.Tensor,
                            scale: float = 1.0, *, ctx_rows_B: torch.Tensor | None = None,
                            block_m: int | None = None, block_n: int | None = None,
                            block_dv: int | None = None, num_splits: int = 1,
                            num_warps: int | None = None) -> torch.Tensor:
    """Triton launcher with the same contract as `canvas_attention_torch` (any strides with unit last dim);
    with ctx_rows_B the selected context rows are read in place (no gathered copy). Tiles, key splits and
    warps are arguments so bench/gpu.py can sweep them (num_splits is capped at one key block a split)."""
    check_attention_args(q_BHCD, k_ctx_BKSD, v_ctx_BKSD, ctx_visible_BS, k_can_BKCD, v_can_BKCD, ctx_rows_B)
    if num_splits < 1 or (num_warps is not None and num_warps not in (1, 2, 4, 8, 16)):
        raise ValueError(f"canvas_attention: num_splits must be >= 1 and num_warps a power of two up to 16, "
                         f"got {num_splits}, {num_warps}")
    B, H, C, D = q_BHCD.shape
    K, S = k_ctx_BKSD.shape[1], k_ctx_BKSD.shape[2]
    G = H // K
    ts = [t if t.stride(-1) == 1 else t.contiguous()
          for t in (q_BHCD, k_ctx_BKSD, v_ctx_BKSD, k_can_BKCD, v_can_BKCD)]
    q, kc, vc, kn, vn = ts
    vis = ctx_visible_BS  # bool, read in place
    if S == 0:  # keep a valid pointer; no context key is ever read
        vis = torch.zeros(B, 1, dtype=torch.bool, device=q.device)
    # o is written in [B, C, H, D] memory order and returned as its [B, H, C, D] view, so the output
    # projection's transpose back to [B, C, H * D] is free (no copy)
    o = torch.empty(B, C, H, D, dtype=q.dtype, device=q.device).transpose(1, 2)
    # Q [BM, D] stays in registers and the score is one dot over the whole D; the output D may be split
    # across programs (block_dv) to bound the accumulator, at the price of recomputing the scores
    bd = max(16, next_pow2(D))
    block_m = block_m or min(64 if D <= 256 else 32, max(16, next_pow2(G * C)))
    block_n = block_n or (64 if D <= 256 else 32)
    block_dv = block_dv or min(bd, 256)
    n_dv = triton.cdiv(D, block_dv)
    # each split owns a whole number of key blocks and none is empty (so at most one split per block)
    per_split = triton.cdiv(S + C, min(num_splits, triton.cdiv(S + C, block_n)))
    per_split = triton.cdiv(per_split, block_n) * block_n
    n_splits = triton.cdiv(S + C, per_split)
    rows_all = B * H * C
    upcast = interpret_mode() or q.dtype == torch.float32
    grid = (triton.cdiv(G * C, block_m), B * K, n_dv * n_splits)
    rows = ctx_rows_B.contiguous() if ctx_rows_B is not None else vis  # vis: never read
    split = n_splits > 1
    # split: fp32 partial outputs [splits, B*H*C, D] and their running max and sum [2, splits, B*H*C]
    dest = torch.empty(n_splits, rows_all, D, dtype=torch.float32, device=q.device) if split else o
    ml = torch.empty(2, n_splits, rows_all, dtype=torch.float32, device=q.device) if split else vis
    runnable(_canvas_attn_kernel)[grid](
        q, kc, vc, vis, kn, vn, dest, rows, ml,
        q.stride(0), q.stride(1), q.stride(2), kc.stride(0), kc.stride(1), kc.stride(2),
        vc.stride(0), vc.stride(1), vc.stride(2), vis.stride(0),
        kn.stride(0), kn.stride(1), kn.stride(2), vn.stride(0), vn.stride(1), vn.stride(2),
        o.stride(0), o.stride(1), o.stride(2), K, G, C, S, D, float(scale), n_dv, per_split, rows_all,
        BM=block_m, BN=block_n, BD=bd, BDV=block_dv, UPCAST=upcast, IEEE=q.dtype == torch.float32,
        HAS_ROWS=ctx_rows_B is not None, SPLIT=split, num_warps=num_warps or (8 if D > 128 else 4),
        num_stages=2)
    if split:
        br = 16
        runnable(_merge_splits_kernel)[(triton.cdiv(rows_all, br), n_dv)](
            dest, ml, o, H, C, D, o.stride(0), o.stride(1), o.stride(2), rows_all,
            NS=n_splits, BR=br, BDV=block_dv, num_warps=4)
    return o


def check_attention_args(q_BHCD, k_ctx_BKSD, v_ctx_BKSD, ctx_visible_BS, k_can_BKCD, v_can_BKCD,
                         ctx_rows_B=None) -> None:
    """Shape/dtype contract shared by both backends; raises ValueError naming the bad argument."""
    if q_BHCD.dim() != 4:
        raise ValueError(f"canvas_attention: q_BHCD must be 4-D, got {tuple(q_BHCD.shape)}")
    B, H, C, D = q_BHCD.shape
    K = k_can_BKCD.shape[1] if k_can_BKCD.dim() == 4 else -1
    S = k_ctx_BKSD.shape[2] if k_ctx_BKSD.dim() == 4 else -1
    Bc = B  # context rows: B, or the slots ctx_rows_B indexes
    if ctx_rows_B is not None:
        if ctx_rows_B.shape != (B,) or ctx_rows_B.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"canvas_attention: ctx_rows_B must be int [{B}], got {tuple(ctx_rows_B.shape)} "
                             f"{ctx_rows_B.dtype}")
        Bc = k_ctx_BKSD.shape[0]
    want = {"k_can_BKCD": (B, K, C, D), "v_can_BKCD": (B, K, C, D), "k_ctx_BKSD": (Bc, K, S, D),
            "v_ctx_BKSD": (Bc, K, S, D), "ctx_visible_BS": (B, S)}
    got = {"k_can_BKCD": k_can_BKCD, "v_can_BKCD": v_can_BKCD, "k_ctx_BKSD": k_ctx_BKSD,
           "v_ctx_BKSD": v_ctx_BKSD, "ctx_visible_BS": ctx_visible_BS}
    for name, t in got.items():
        if tuple(t.shape) != want[name] or t.device != q_BHCD.device:
            raise ValueError(f"canvas_attention: {name} is {tuple(t.shape)} on {t.device}, want {want[name]} "
                             f"on {q_BHCD.device} (q_BHCD {tuple(q_BHCD.shape)})")
        if name != "ctx_visible_BS" and t.dtype != q_BHCD.dtype:
            raise ValueError(f"canvas_attention: {name} dtype {t.dtype} != q dtype {q_BHCD.dtype}")
    if K <= 0 or H % K:
        raise ValueError(f"canvas_attention: query heads {H} not a multiple of KV heads {K}")
    if ctx_visible_BS.dtype != torch.bool:
        raise ValueError(f"canvas_attention: ctx_visible_BS must be bool, got {ctx_visible_BS.dtype}")


def selfcheck(device: torch.device) -> bool:
    """One-time kernel-vs-reference comparison on `device` in bf16 (D=512, GQA, padding, masked rows)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    B, H, K, C, S, D = 2, 4, 2, 19, 37, 512
    mk = lambda *s: torch.randn(*s, generator=g).to(device, torch.bfloat16)  # noqa: E731
    q, kc, vc, kn, vn = mk(B, H, C, D), mk(B, K, S, D), mk(B, K, S, D), mk(B, K, C, D), mk(B, K, C, D)
    q = q * 0.05
    vis = torch.rand(B, S, generator=g).gt(0.3).to(device)
    vis[1] = False
    ref = canvas_attention_torch(q.float(), kc.float(), vc.float(), vis, kn.float(), vn.float())
    out = canvas_attention_triton(q, kc, vc, vis, kn, vn).float()
    return bool(((out - ref).abs().max() <= 0.05).item())
