"""MoE routing layout (moe_align): torch reference and a three-launch Triton twin with the same output.

Input: topk_idx_Tk, the expert of each assignment a = t*k + j. Output, for the grouped GEMMs of
kernels/fused_moe.py:
  sorted_ids_P  int32 [G * BM]: assignment ids grouped by expert in increasing order (stable), each expert's
                group padded to a multiple of BM with the invalid id A = T*k; slots past the last real block
                hold A too.
  block_expert_G int32 [G]: the expert of each BM-row block (clamped to E-1 past the real blocks).
  num_blocks_1  int32 [1]: how many blocks are real.
G = cdiv(A, BM) + E is a static upper bound, so neither form reads anything back to the host and both can sit
inside a CUDA graph.

Why a kernel: the torch form is about twenty small launches per MoE layer (scatter_add, cumsums, argsort,
gathers, searchsorted, ...), as many as the rest of a decoder layer on the GPU path once norms are fused. The
Triton form is three launches and deterministic (no atomics):
  1. count    (grid P = cdiv(A, CH)): per-chunk expert counts cnt_PE.
  2. layout   (one program): totals -> blocks per expert -> padded group starts; off_PE = where chunk p's
              first assignment of expert e goes; block_expert, num_blocks; sorted_ids filled with A.
  3. scatter  (grid P): each assignment's slot = off_PE[p, e] + its rank among chunk p's assignments of e.

The grouped GEMMs read the layout back with `block_rows` (a device helper): program m's expert and the
assignment ids of its BM rows.

Legend: A assignments, E experts (EP = next power of two), BM rows per block, P chunks of CH assignments.
"""

from __future__ import annotations

import torch

from kernels._triton_compat import next_pow2, runnable, tl, triton


# ---- torch reference --------------------------------------------------------------------------------------
def align_tokens(topk_idx_Tk: torch.Tensor, num_experts: int,
                 block_m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (sorted_ids_P int32, block_expert_G int32, num_blocks_1 int32); see the module doc."""
    dev = topk_idx_Tk.device
    A = topk_idx_Tk.numel()
    flat_A = topk_idx_Tk.reshape(-1).long()
    G = -(-A // block_m) + num_experts
    counts_E = torch.zeros(num_experts, dtype=torch.long, device=dev)
    counts_E.scatter_add_(0, flat_A, torch.ones_like(flat_A))  # no bincount: it syncs with the host
    blocks_E = (counts_E + block_m - 1) // block_m
    block_end_E = torch.cumsum(blocks_E, 0)
    pad_start_E = (block_end_E - blocks_E) * block_m  # first slot of each expert's padded group
    first_E = torch.cumsum(counts_E, 0) - counts_E  # first position of each expert in the sorted order
    order_A = torch.argsort(flat_A, stable=True)
    e_sorted = flat_A[order_A]
    dest_A = pad_start_E[e_sorted] + torch.arange(A, device=dev) - first_E[e_sorted]
    sorted_ids = torch.full((G * block_m,), A, dtype=torch.int32, device=dev)
    sorted_ids.scatter_(0, dest_A, order_A.to(torch.int32))
    block_expert = torch.searchsorted(block_end_E, torch.arange(G, device=dev), right=True)
    block_expert = block_expert.clamp_(max=num_experts - 1).to(torch.int32)
    return sorted_ids, block_expert, block_end_E[-1:].to(torch.int32)


# ---- Triton kernels ----------------------------------------------------------------------------------------
@triton.jit
def _count_kernel(idx_ptr, cnt_ptr, A, EP: tl.constexpr, CH: tl.constexpr):
    p = tl.program_id(0)
    offs = p * CH + tl.arange(0, CH)
    es = tl.arange(0, EP)
    e = tl.load(idx_ptr + offs, mask=offs < A, other=EP).to(tl.int32)  # EP matches no expert column
    hit = (e[:, None] == es[None, :]).to(tl.int32)
    tl.store(cnt_ptr + p * EP + es, tl.sum(hit, axis=0))


@triton.jit
def _layout_kernel(cnt_ptr, off_ptr, ids_ptr, bexp_ptr, nblk_ptr, P, A, E, G,
                   BM: tl.constexpr, EP: tl.constexpr, PB: tl.constexpr, FB: tl.constexpr):
    es = tl.arange(0, EP)
    tot = tl.zeros((EP,), tl.int32)
    for p0 in range(0, P, PB):
        ps = p0 + tl.arange(0, PB)
        tot += tl.sum(tl.load(cnt_ptr + ps[:, None] * EP + es[None, :], mask=(ps < P)[:, None], other=0),
                      axis=0)
    blocks = (tot + BM - 1) // BM
    block_end = tl.cumsum(blocks, axis=0)
    run = (block_end - blocks) * BM  # each expert's padded group start, then advanced chunk by chunk
    tl.store(nblk_ptr, tl.sum(blocks, axis=0))
    for p0 in range(0, P, PB):
        ps = p0 + tl.arange(0, PB)
        m = (ps < P)[:, None]
        c = tl.load(cnt_ptr + ps[:, None] * EP + es[None, :], mask=m, other=0)
        tl.store(off_ptr + ps[:, None] * EP + es[None, :], run[None, :] + tl.cumsum(c, axis=0) - c, mask=m)
        run += tl.sum(c, axis=0)
    for g0 in range(0, G, FB):
        gs = g0 + tl.arange(0, FB)
        be = tl.sum((block_end[None, :] <= gs[:, None]).to(tl.int32), axis=1)  # searchsorted, right side
        tl.store(bexp_ptr + gs, tl.minimum(be, E - 1), mask=gs < G)
    for s0 in range(0, G * BM, FB):
        ss = s0 + tl.arange(0, FB)
        tl.store(ids_ptr + ss, tl.zeros((FB,), tl.int32) + A, mask=ss < G * BM)


@triton.jit
def _scatter_kernel(idx_ptr, off_ptr, ids_ptr, A, EP: tl.constexpr, CH: tl.constexpr):
    p = tl.program_id(0)
    offs = p * CH + tl.arange(0, CH)
    ok = offs < A
    es = tl.arange(0, EP)
    e = tl.load(idx_ptr + offs, mask=ok, other=EP).to(tl.int32)
    hit = (e[:, None] == es[None, :]).to(tl.int32)
    rank = tl.sum((tl.cumsum(hit, axis=0) - hit) * hit, axis=1)  # earlier assignments of e in this chunk
    base = tl.sum(hit * tl.load(off_ptr + p * EP + es)[None, :], axis=1)
    tl.store(ids_ptr + base + rank, offs.to(tl.int32), mask=ok)


# ---- reading the layout back (a leaf device helper: it calls only triton.language) -------------------------
@triton.jit
def block_rows(ids_ptr, bexp_ptr, pid_m, A, DIV, BM: tl.constexpr):
    """Block pid_m of the layout: (its expert e as int64, its assignment ids rows_M, rows_M < A, and the
    int64 row each assignment reads, rows_M // DIV: the token with DIV = k, the assignment itself with 1;
    row 0 for padding, whose loads and stores are masked by the third value)."""
    e = tl.load(bexp_ptr + pid_m).to(tl.int64)
    rows_M = tl.load(ids_ptr + pid_m * BM + tl.arange(0, BM))
    ok_M = rows_M < A
    return e, rows_M, ok_M, tl.where(ok_M, rows_M // DIV, 0).to(tl.int64)


def align_tokens_triton(topk_idx_Tk: torch.Tensor, num_experts: int, block_m: int, *,
                        chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same contract and output as `align_tokens`, in three launches."""
    dev = topk_idx_Tk.device
    A = topk_idx_Tk.numel()
    E = num_experts
    EP = next_pow2(E)
    CH = min(chunk, next_pow2(max(A, 1)))
    P = triton.cdiv(A, CH)
    G = -(-A // block_m) + E
    flat_A = topk_idx_Tk.reshape(-1).contiguous()
    cnt_PE = torch.empty(P, EP, dtype=torch.int32, device=dev)
    off_PE = torch.empty(P, EP, dtype=torch.int32, device=dev)
    sorted_ids = torch.empty(G * block_m, dtype=torch.int32, device=dev)
    block_expert = torch.empty(G, dtype=torch.int32, device=dev)
    nblk = torch.empty(1, dtype=torch.int32, device=dev)
    # [CH, EP] one-hot tiles: 64 x 128 int32 over 8 warps is 32 registers a thread
    runnable(_count_kernel)[(P,)](flat_A, cnt_PE, A, EP=EP, CH=CH, num_warps=8)
    runnable(_layout_kernel)[(1,)](cnt_PE, off_PE, sorted_ids, block_expert, nblk, P, A, E, G,
                                   BM=block_m, EP=EP, PB=min(32, next_pow2(P)), FB=64, num_warps=8)
    runnable(_scatter_kernel)[(P,)](flat_A, off_PE, sorted_ids, A, EP=EP, CH=CH, num_warps=8)
    return sorted_ids, block_expert, nblk
