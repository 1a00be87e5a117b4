"""Fused one-pass sampler over a vocabulary row: argmax, entropy, log-sum-exp and a Gumbel-max sample.

Owns: the torch reference (`fused_sample_torch`, the spec and the CPU path), the Triton kernel, its launcher
(`fused_sample_triton`). The counter-based noise hash both share bit for bit, and the per-position stream
keys, live in kernels/stream_keys.py. Head mode
(`head_sample_*`): the same pass over the LM head's raw output, softcap and temperature applied in the kernel
exactly as kernels/logit_epilogue.py applies them, so the GPU step never materialises fp32 logits.

Why: sampling op by op passes over the fp32 logits many times per step (the torch references: 24.2 passes
per decoder forward, bench/RESULTS.md "Launches and logit traffic per denoising step"); here every statistic
the denoising loop needs comes out of one tiled pass over x = logits * inv_temp.
The sample is Gumbel-max, argmax(x + g) with g = -log(-log(u)), which is a draw from softmax(x) (the same
identity as the reference's multinomial == argmax(p / Exp(1))). u comes from a hash of (key, column), so a
row's noise depends only on its key: reproducible per request, independent of batch composition, and never
materialised as a [N, V] tensor on the GPU.

Legend: N rows (flattened B*C canvas positions), V vocabulary, B batch rows, C canvas length.

Keys: build them with `derive_keys(seed_B, canvas_B, step_B, C)` -> key_(B*C); each (seed, canvas, step,
position) gets its own stream. Sampling only some rows: the sample of a row depends only on (logits row,
inv_temp, key), so a caller may first get stats for all rows with need_sample_N all False, choose the rows
to keep, then call again on just those rows (`logits_NV[idx]`, `key_N[idx]`) to sample them.
"""

from __future__ import annotations

import torch

from kernels._triton_compat import runnable, tl, triton
from kernels._triton_math import mix32_u32, softcap_f32
from kernels.logit_epilogue import logit_epilogue_torch
from kernels.stream_keys import derive_keys_torch, row_state, uniform_noise

_CHUNK_ELEMS = 1 << 22  # CPU reference works on row chunks of at most this many elements (bounds memory)


# ---- torch reference: the spec, and the CPU path ----------------------------------------------------------
def fused_sample_torch(logits_NV: torch.Tensor, inv_temp_N: torch.Tensor, key_N: torch.Tensor,
                       need_sample_N: torch.Tensor | None = None, *, sample_only: bool = False):
    """Per row of x = logits_NV * inv_temp_N[:, None] (fp32):

    returns (argmax_N long, entropy_N fp32 = H(softmax(x)), sample_N long = argmax(x + gumbel(key, v)) or -1
    where need_sample_N is False, max_logit_N fp32 = max(x), logsumexp_N fp32 = logsumexp(x)).
    Ties in argmax resolve to the lowest index. Works on row chunks to bound memory (a few passes each).
    sample_only lets the Triton kernel skip unsampled rows; here every output is computed regardless.
    """
    N, V = logits_NV.shape
    dev = logits_NV.device
    out_am = torch.empty(N, dtype=torch.long, device=dev)
    out_h = torch.empty(N, dtype=torch.float32, device=dev)
    out_s = torch.full((N,), -1, dtype=torch.long, device=dev)
    out_m = torch.empty(N, dtype=torch.float32, device=dev)
    out_lse = torch.empty(N, dtype=torch.float32, device=dev)
    cols_V = torch.arange(V, dtype=torch.int64, device=dev)
    state_N = row_state(key_N.to(torch.int64))
    rows = max(1, _CHUNK_ELEMS // max(V, 1))
    for a in range(0, N, rows):
        b = min(N, a + rows)
        x = logits_NV[a:b].to(torch.float32) * inv_temp_N[a:b, None].to(torch.float32)
        m, am = x.max(dim=-1)
        d = x - m[:, None]
        e = d.exp()
        s = e.sum(-1)
        # sum p*(x - m) with 0*(-inf) treated as 0 so -inf logits (masked tokens) stay finite.
        t = (e * torch.where(e > 0, d, 0.0)).sum(-1)
        out_am[a:b], out_m[a:b] = am, m
        out_lse[a:b] = m + s.log()
        out_h[a:b] = s.log() - t / s
        want = slice(None) if need_sample_N is None else need_sample_N[a:b].nonzero().squeeze(1)
        if need_sample_N is not None and want.numel() == 0:
            continue
        g = -(-uniform_noise(state_N[a:b][want], cols_V).log()).log()
        picked = (x[want] + g).argmax(dim=-1)
        if need_sample_N is None:
            out_s[a:b] = picked
        else:
            out_s[a + want] = picked
    return out_am, out_h, out_s, out_m, out_lse


# ---- Triton kernel: one program per row, tiles of BLOCK_V, running scalar statistics ----------------------
@triton.jit
def _fused_sample_kernel(logits_ptr, stride_n, inv_temp_ptr, key_ptr, need_ptr,
                         am_ptr, h_ptr, s_ptr, m_ptr, lse_ptr, V, cap, ROWS_PER_T, N, CHUNK, part_f_ptr,
                         part_i_ptr,
                         BLOCK_V: tl.constexpr, HAS_NEED: tl.constexpr, SAMPLE_ONLY: tl.constexpr,
                         HEAD: tl.constexpr, HAS_T: tl.constexpr, SPLIT: tl.constexpr):
    row = tl.program_id(0)
    # SPLIT: this program covers columns [chunk * CHUNK, chunk * CHUNK + CHUNK) of the row and leaves its
    # running statistics for _merge_chunks_kernel (more programs for few rows; same comparisons, so the
    # argmax and the sample are the same columns)
    chunk = tl.program_id(1)
    if SAMPLE_ONLY:  # a row nobody samples is not read at all (its statistics stay unwritten)
        if tl.load(need_ptr + row) == 0:
            if not SPLIT:
                tl.store(s_ptr + row, tl.full([], -1, tl.int64))
            return
    # HEAD: the LM head's raw output, processed here as kernels/logit_epilogue.py does (same helper, same
    # division by the row's temperature: the same bits), so the fp32 logits never go through memory;
    # inv_temp_ptr then holds the per-canvas temperatures (one per ROWS_PER_T rows)
    if HEAD:
        temp = tl.full([], 1.0, tl.float32)
        if HAS_T:
            temp = tl.load(inv_temp_ptr + row // ROWS_PER_T).to(tl.float32)
    else:
        temp = tl.load(inv_temp_ptr + row).to(tl.float32)  # here the inverse temperature
    key = tl.load(key_ptr + row)
    # row_state(key) = mix32(lo ^ mix32(hi ^ SALT0)), in wrapping uint32
    state = mix32_u32(key.to(tl.uint32) ^ mix32_u32((key >> 32).to(tl.uint32) ^ 0x1B873593))
    do_sample = True
    if HAS_NEED:
        do_sample = tl.load(need_ptr + row) != 0
    offs = tl.arange(0, BLOCK_V)
    base = logits_ptr + row.to(tl.int64) * stride_n
    # Finite start for the running max: exp(m - new_m) underflows to 0 and (m - new_m) * 0 stays 0, no NaN.
    m = tl.full([], -3.0e38, tl.float32)
    s = tl.zeros([], tl.float32)
    t = tl.zeros([], tl.float32)  # sum e^(x-m) * (x-m): entropy = log s - t / s
    best = tl.zeros([], tl.int32)
    gmax = tl.full([], float("-inf"), tl.float32)
    gidx = tl.full([], -1, tl.int32)
    col_end = V
    col_start = 0
    if SPLIT:
        col_start = chunk * CHUNK
        col_end = tl.minimum(col_start + CHUNK, V)
    for start in range(col_start, col_end, BLOCK_V):
        cols = start + offs
        mask = cols < col_end
        x = tl.load(base + cols, mask=mask, other=float("-inf")).to(tl.float32)
        if HEAD:
            x = softcap_f32(x, cap)
            if HAS_T:
                x = x / temp
        else:
            x = x * temp
        x = tl.where(mask, x, float("-inf"))
        tm = tl.max(x, 0)
        ti = tl.argmax(x, 0)
        best = tl.where(tm > m, start + ti, best)
        new_m = tl.maximum(m, tm)
        alpha = tl.exp(m - new_m)
        d = x - new_m
        e = tl.exp(d)
        t = alpha * (t + (m - new_m) * s) + tl.sum(e * tl.where(e > 0, d, 0.0), 0)
        s = alpha * s + tl.sum(e, 0)
        m = new_m
        if do_sample:
            h = mix32_u32(state ^ (cols.to(tl.uint32) * 0x61C88647))
            u = ((h >> 9) * 2 + 1).to(tl.float32) * 5.9604644775390625e-08
            z = x - tl.log(-tl.log(u))
            tz = tl.max(z, 0)
            tzi = tl.argmax(z, 0)
            gidx = tl.where(tz > gmax, start + tzi, gidx)
            gmax = tl.maximum(gmax, tz)
    if SPLIT:  # fp32 [4, chunks, N] = (m, s, t, gmax), int32 [2, chunks, N] = (best, gidx)
        at = chunk * N + row
        plane = tl.num_programs(1) * N
        tl.store(part_f_ptr + at, m)
        tl.store(part_f_ptr + plane + at, s)
        tl.store(part_f_ptr + 2 * plane + at, t)
        tl.store(part_f_ptr + 3 * plane + at, gmax)
        tl.store(part_i_ptr + at, best)
        tl.store(part_i_ptr + plane + at, gidx)
    else:
        tl.store(am_ptr + row, best.to(tl.int64))
        tl.store(h_ptr + row, tl.log(s) - t / s)
        tl.store(s_ptr + row, gidx.to(tl.int64))
        tl.store(m_ptr + row, m)
        tl.store(lse_ptr + row, m + tl.log(s))


@triton.jit
def _merge_chunks_kernel(part_f_ptr, part_i_ptr, need_ptr, am_ptr, h_ptr, s_ptr, m_ptr, lse_ptr, N,
                         CHUNKS: tl.constexpr, BR: tl.constexpr, SAMPLE_ONLY: tl.constexpr):
    """Each row's statistics from its column chunks' running ones, in column order: max M, then
    s = sum_c e^(m_c - M) s_c, t = sum_c e^(m_c - M) (t_c + (m_c - M) s_c) (the kernel's own rescaling), and
    the first chunk holding the largest logit (or Gumbel score) gives the argmax (or sample): the lowest
    column on ties, as in one pass."""
    rows = tl.program_id(0) * BR + tl.arange(0, BR)
    ok = rows < N
    write = ok
    if SAMPLE_ONLY:  # rows nobody samples: sample -1, statistics unwritten (as without chunks)
        keep = tl.load(need_ptr + rows, mask=ok, other=0) != 0
        tl.store(s_ptr + rows, tl.full((BR,), -1, tl.int64), mask=ok & ~keep)
        write = ok & keep
    ok = write  # their chunks wrote no partials: read none
    plane = CHUNKS * N
    big = tl.full((BR,), -3.0e38, tl.float32)
    for c in tl.static_range(CHUNKS):
        big = tl.maximum(big, tl.load(part_f_ptr + c * N + rows, mask=ok, other=-3.0e38))
    s = tl.zeros((BR,), tl.float32)
    t = tl.zeros((BR,), tl.float32)
    best_m = tl.full((BR,), -3.0e38, tl.float32)
    best = tl.zeros((BR,), tl.int32)
    gmax = tl.full((BR,), float("-inf"), tl.float32)
    gidx = tl.full((BR,), -1, tl.int32)
    for c in tl.static_range(CHUNKS):
        at = c * N + rows
        m_c = tl.load(part_f_ptr + at, mask=ok, other=-3.0e38)
        s_c = tl.load(part_f_ptr + plane + at, mask=ok, other=1.0)  # (1: a finite log for rows not read)
        t_c = tl.load(part_f_ptr + 2 * plane + at, mask=ok, other=0.0)
        g_c = tl.load(part_f_ptr + 3 * plane + at, mask=ok, other=float("-inf"))
        w = tl.exp(m_c - big)
        t = t + w * (t_c + (m_c - big) * s_c)
        s = s + w * s_c
        take = m_c > best_m
        best = tl.where(take, tl.load(part_i_ptr + at, mask=ok, other=0), best)
        best_m = tl.where(take, m_c, best_m)
        gtake = g_c > gmax
        gidx = tl.where(gtake, tl.load(part_i_ptr + plane + at, mask=ok, other=-1), gidx)
        gmax = tl.where(gtake, g_c, gmax)
    tl.store(am_ptr + rows, best.to(tl.int64), mask=write)
    tl.store(h_ptr + rows, tl.log(s) - t / s, mask=write)
    tl.store(s_ptr + rows, gidx.to(tl.int64), mask=write)
    tl.store(m_ptr + rows, big, mask=write)
    tl.store(lse_ptr + rows, big + tl.log(s), mask=write)


def fused_sample_triton(logits_NV: torch.Tensor, inv_temp_N: torch.Tensor, key_N: torch.Tensor,
                        need_sample_N: torch.Tensor | None = None, *, sample_only: bool = False,
                        block_v: int | None = None, chunks: int = 1):
    """Triton launcher with the same contract as `fused_sample_torch`. sample_only (with need_sample_N):
    rows not sampled are skipped without reading them, so their statistics are left unwritten.
    chunks > 1 splits each row's columns over that many programs plus a merge launch (for few rows: one
    canvas is 256 rows for 132 SMs); the argmax and sample are the same columns, the statistics round
    differently in the last bits. The count is the caller's, never derived from N, so a row's results do not
    depend on how many rows share the call."""
    check_sample_args(logits_NV, inv_temp_N, key_N, need_sample_N)
    return _launch(logits_NV, inv_temp_N, key_N, need_sample_N, sample_only, block_v, chunks=chunks)


def _launch(logits_NV, t_N, key_N, need_sample_N, sample_only, block_v, cap=None, chunks=1):
    """The kernel over every row; cap set: head mode (t_N is then the per-canvas temperature or None)."""
    if chunks < 1:
        raise ValueError(f"fused_sample: chunks must be >= 1, got {chunks}")
    N, V = logits_NV.shape
    dev = logits_NV.device
    if logits_NV.stride(1) != 1:
        logits_NV = logits_NV.contiguous()
    block_v = block_v or min(4096, 1 << max(4, (V - 1).bit_length()))
    key_N = key_N.contiguous()
    need = need_sample_N.to(torch.int8).contiguous() if need_sample_N is not None else key_N
    outs = (torch.empty(N, dtype=torch.long, device=dev), torch.empty(N, dtype=torch.float32, device=dev),
            torch.empty(N, dtype=torch.long, device=dev), torch.empty(N, dtype=torch.float32, device=dev),
            torch.empty(N, dtype=torch.float32, device=dev))
    if N == 0:
        return outs
    head, has_t = cap is not None, t_N is not None
    t = t_N.float().contiguous() if has_t else outs[1]
    # whole tiles per chunk, none empty
    chunk_cols = triton.cdiv(triton.cdiv(V, min(chunks, triton.cdiv(V, block_v))), block_v) * block_v
    n_chunks = triton.cdiv(V, chunk_cols)
    split = n_chunks > 1
    part_f = torch.empty(4, n_chunks, N, dtype=torch.float32, device=dev) if split else outs[1]
    part_i = torch.empty(2, n_chunks, N, dtype=torch.int32, device=dev) if split else outs[1]
    sample_only = sample_only and need_sample_N is not None
    runnable(_fused_sample_kernel)[(N, n_chunks)](
        logits_NV, logits_NV.stride(0), t, key_N, need, *outs, V, float(cap or 1.0),
        N // t_N.numel() if head and has_t else 1, N, chunk_cols, part_f, part_i,
        BLOCK_V=block_v, HAS_NEED=need_sample_N is not None,
        SAMPLE_ONLY=sample_only, HEAD=head, HAS_T=has_t, SPLIT=split,
        num_warps=8 if block_v >= 2048 else 4)
    if split:
        br = 128
        runnable(_merge_chunks_kernel)[(triton.cdiv(N, br),)](
            part_f, part_i, need, *outs, N, CHUNKS=n_chunks, BR=br, SAMPLE_ONLY=sample_only, num_warps=4)
    return outs


# ---- head mode: the same statistics and sample straight from the LM head's raw output ----------------------
def head_sample_torch(x_NV: torch.Tensor, cap: float, temperature_R: torch.Tensor | None,
                      key_N: torch.Tensor, need_sample_N: torch.Tensor | None = None, *,
                      sample_only: bool = False):
    """fused_sample of the processed logits logit_epilogue(x, cap, temperature_R) (the spec)."""
    N, V = x_NV.shape
    R = temperature_R.numel() if temperature_R is not None else N
    y = logit_epilogue_torch(x_NV.view(R, N // max(R, 1), V), cap, temperature_R)[0].view(N, V)
    ones = torch.ones(N, dtype=torch.float32, device=x_NV.device)
    return fused_sample_torch(y, ones, key_N, need_sample_N, sample_only=sample_only)


def head_sample_triton(x_NV: torch.Tensor, cap: float, temperature_R: torch.Tensor | None,
                       key_N: torch.Tensor, need_sample_N: torch.Tensor | None = None, *,
                       sample_only: bool = False, block_v: int | None = None, chunks: int = 1):
    """Same contract as `head_sample_torch`: the fused sampler's one pass reads the raw [N, V] LM head output
    (2 bytes a logit in bf16) and applies the softcap and temperature itself, so the step never writes or
    reads the fp32 logits. chunks: as in `fused_sample_triton`."""
    check_head_sample_args(x_NV, temperature_R, key_N, need_sample_N)
    return _launch(x_NV, temperature_R, key_N, need_sample_N, sample_only, block_v, cap=cap, chunks=chunks)


def check_head_sample_args(x_NV, temperature_R, key_N, need_sample_N) -> None:
    """head_sample's contract: fused_sample's, with temperature_R [R] (one per N / R rows) or None."""
    ones = torch.empty(x_NV.shape[0] if x_NV.dim() == 2 else 0, device=x_NV.device)
    check_sample_args(x_NV, ones, key_N, need_sample_N)
    N = x_NV.shape[0]
    if temperature_R is not None and (temperature_R.dim() != 1 or temperature_R.numel() == 0
                                      or N % temperature_R.numel() or temperature_R.device != x_NV.device):
        raise ValueError(f"head_sample: temperature_R must be [R] with R dividing {N} on {x_NV.device}, got "
                         f"{tuple(temperature_R.shape)} on {temperature_R.device}")


def check_sample_args(logits_NV, inv_temp_N, key_N, need_sample_N) -> None:
    """Shape/dtype contract shared by both backends; raises ValueError naming the bad argument."""
    if logits_NV.dim() != 2 or not logits_NV.is_floating_point():
        raise ValueError(f"fused_sample: logits_NV must be a 2-D float tensor, got {tuple(logits_NV.shape)} "
                         f"{logits_NV.dtype}")
    N = logits_NV.shape[0]
    for name, t, ok in (("inv_temp_N", inv_temp_N, inv_temp_N.is_floating_point()),
                        ("key_N", key_N, key_N.dtype == torch.int64),
                        ("need_sample_N", need_sample_N,
                         need_sample_N is None or need_sample_N.dtype == torch.bool)):
        if t is None:
            continue
        if tuple(t.shape) != (N,) or not ok or t.device != logits_NV.device:
            raise ValueError(f"fused_sample: {name} must be [{N}] on {logits_NV.device} "
                             f"(float / int64 / bool), got {tuple(t.shape)} {t.dtype} on {t.device}")


def selfcheck(device: torch.device) -> bool:
    """One-time comparison of the kernel against the reference on `device` (used by kernels.backend_for)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    logits = (torch.randn(5, 3001, generator=g) * 4).to(device)
    inv_t = torch.rand(5, generator=g).add(0.5).to(device)
    keys = derive_keys_torch(7, 0, torch.arange(5), 1).to(device)
    need = torch.tensor([True, False, True, True, False], device=device)
    ref = fused_sample_torch(logits, inv_t, keys, need)
    out = fused_sample_triton(logits, inv_t, keys, need)
    return (torch.equal(ref[0], out[0]) and torch.equal(ref[2], out[2])
            and all(torch.allclose(ref[i], out[i], atol=1e-4, rtol=1e-4) for i in (1, 3, 4)))


def selfcheck_head(device: torch.device) -> bool:
    """One-time comparison of the head mode against its reference on `device` (bf16 raw logits, two
    temperatures): the same argmax and samples, statistics within 1e-4."""
    g = torch.Generator(device="cpu").manual_seed(1)
    x = (torch.randn(6, 3001, generator=g) * 40).to(device, torch.bfloat16)
    temp = torch.tensor([0.6, 1.3], device=device)
    keys = derive_keys_torch(3, 0, torch.arange(6), 1).to(device)
    need = torch.tensor([True, False, True, True, False, True], device=device)
    ref = head_sample_torch(x, 30.0, temp, keys, need)
    out = head_sample_triton(x, 30.0, temp, keys, need)
    return (torch.equal(ref[0], out[0]) and torch.equal(ref[2], out[2])
            and all(torch.allclose(ref[i], out[i], atol=1e-4, rtol=1e-4) for i in (1, 3, 4)))
