"""Compiled (numba) twin of dp.py's per-canvas work: the class max, the Viterbi sweep and the backtrack.

Legend: n counted canvas positions, V vocabulary, K token classes (+2 pseudo classes: EOS = K, ANY = K+1,
+1 discarded bucket K+2 for never-allowed tokens), D distinct class sets (+1: the -inf padding set D),
S' internal states (dp_layout.py; + the sentinel S', always -inf), P' padded pairs.

dp.py's numpy path is the reference (the spec); dp.best_path dispatches here by default. This file computes
EXACTLY the same numbers and the same path: every score is the same float32 sum (previous score + best
logit of the pair's class set, one rounding), maxima are exact whatever the order, and every argmax keeps
the first maximum in the reference's order (pair slots in layout order, classes of a set ascending, tokens
of a class by ascending id, EOS ids in the checkpoint's order). Only NaN logits could tell the two apart
(numpy propagates NaN, the loops here skip it); a model emitting NaN is a bug upstream.

Why compiled: numpy's floor here was the class max (a torch scatter at ~1.4 ns a logit) and ~20 numpy calls
of ~2 us per sweep position (measured with bench/constraints.py). One loop per row over the logits keeps
the per-class maxima and argmaxima in L1; the sweep keeps dp_layout's template blocks (one set score per
row of a template) and walks the other states' real in-pairs only, with no per-call overhead.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
from numba import njit

from constraints.dp_layout import DPTables

NEG = np.float32(-np.inf)


def _jit(fn):
    """njit with an on-disk cache (no compile per process after the first), nogil (rows can run in
    threads); where numba finds no writable cache location (read-only install, no writable home) it
    raises at decoration time: fall back to an uncached compile, slower only on the first call."""
    try:
        return njit(cache=True, nogil=True)(fn)
    except RuntimeError:
        return njit(cache=False, nogil=True)(fn)


def _class_max_kernel(logits_nV, bucket_V, eos_ids, live_first_K, K):
    """M [n, K + 2] (per class, then EOS, then ANY), A [n, K] token argmax per class, eos_tok [n].

    One pass per row; a class's running max and argmax stay in L1 (~1 ns a logit on the loaded box, vs
    ~1.4 for torch's scatter-amax, and the argmax comes free). bucket_V is unsigned (uint16 when the
    classes fit), so numba emits no negative-index wraparound and the bucket array stays in L2. Strict >
    keeps the first (lowest id) maximum, as numpy's argmax over the class's ascending token ids does; a
    class whose tokens are all -inf gets its first token (numpy's argmax of an all -inf row is 0)."""
    n, V = logits_nV.shape
    M = np.empty((n, K + 2), dtype=np.float32)
    A = np.empty((n, K), dtype=np.int64)
    eos_tok = np.full(n, -1, dtype=np.int64)
    best = np.empty(K + 3, dtype=np.float32)
    arg = np.empty(K + 3, dtype=np.int64)
    for i in range(n):
        row = logits_nV[i]
        best[:] = NEG
        arg[:] = -1
        for t in range(V):
            c = bucket_V[t]
            x = row[t]
            if x > best[c]:
                best[c] = x
                arg[c] = t
        top = best[0]
        for c in range(1, K + 3):
            top = max(top, best[c])
        for c in range(K):
            M[i, c] = best[c]
            A[i, c] = arg[c] if arg[c] >= 0 else live_first_K[c]
        M[i, K + 1] = top
        if eos_ids.size:
            e = eos_ids[0]
            m = row[e]
            for j in range(1, eos_ids.size):
                if row[eos_ids[j]] > m:
                    m = row[eos_ids[j]]
                    e = eos_ids[j]
            M[i, K] = m
            eos_tok[i] = e
        else:
            M[i, K] = NEG
    return M, A, eos_tok


def _live_class_max_kernel(logits_nV, live_tokens, class_ptr, eos_ids, K):
    """_class_max_kernel for few live tokens (a choice: 46 of 262k): gather each class's tokens only; the
    caller fills ANY (column K + 1) with numpy's SIMD row max, which streams the row ~10x faster than a
    scalar loop. Members ascend by id within a class, so strict > keeps numpy's first maximum."""
    n = logits_nV.shape[0]
    M = np.empty((n, K + 2), dtype=np.float32)
    A = np.empty((n, K), dtype=np.int64)
    eos_tok = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        row = logits_nV[i]
        for c in range(K):
            a = live_tokens[class_ptr[c]]
            m = row[a]
            for k in range(class_ptr[c] + 1, class_ptr[c + 1]):
                if row[live_tokens[k]] > m:
                    m = row[live_tokens[k]]
                    a = live_tokens[k]
            M[i, c] = m
            A[i, c] = a
        M[i, K] = NEG
        if eos_ids.size:
            e = eos_ids[0]
            for j in range(1, eos_ids.size):
                if row[eos_ids[j]] > row[e]:
                    e = eos_ids[j]
            M[i, K] = row[e]
            eos_tok[i] = e
    return M, A, eos_tok


def _sweep_kernel(M, set_ptr, set_members, tblocks, tsrc, trow, gstate, gptr, gsrc, gset, start, n_internal):
    """Scores [n + 1, S' + 1]: row i holds each internal state's best score after i tokens (dp._sweep).

    Same numbers as the numpy sweep (each is one float32 add, then exact maxima), laid out for scalar loops:
    - template blocks (tblocks [nb, 6]: first state, W, T, cols, offset into trow, offset into tsrc): the
      numpy layout's [W, T, cols] sources, one set score per [W, T] row, max-accumulated slot by slot;
    - every other state (gstate) with its real in-pairs only (CSR gptr / gsrc / gset: no padding slots).
    Indices are unsigned and read through slices, so the inner loops carry no wraparound checks (measured
    ~1.1 vs ~2.7 ns a pair). Two row buffers; each finished row is copied into the history."""
    n = M.shape[0]
    D = set_ptr.size - 1
    hist = np.full((n + 1, n_internal + 1), NEG, dtype=np.float32)
    hist[0, start] = 0.0
    mset = np.empty(D + 1, dtype=np.float32)
    mset[D] = NEG
    prev = np.full(n_internal + 1, NEG, dtype=np.float32)
    cur = np.full(n_internal + 1, NEG, dtype=np.float32)  # states nothing writes (in-degree 0) stay -inf
    prev[start] = 0.0
    for i in range(n):
        Mi = M[i]
        for d in range(D):  # set_max, one position at a time (stays in L1)
            m = NEG
            for k in range(set_ptr[d], set_ptr[d + 1]):
                m = max(m, Mi[set_members[k]])
            mset[d] = m
        for b in range(tblocks.shape[0]):
            first, W, T, cols, roff, soff = tblocks[b]
            for w in range(W):
                for t in range(T):
                    s = mset[trow[roff + w * T + t]]
                    src = tsrc[soff + (w * T + t) * cols : soff + (w * T + t + 1) * cols]
                    out = cur[first + t * cols : first + (t + 1) * cols]
                    if w == 0:
                        for c in range(cols):
                            out[c] = prev[src[c]] + s
                    else:
                        for c in range(cols):
                            out[c] = max(out[c], prev[src[c]] + s)
        for j in range(gstate.size):
            src = gsrc[gptr[j] : gptr[j + 1]]
            sets = gset[gptr[j] : gptr[j + 1]]
            m = NEG
            for k in range(src.size):
                m = max(m, prev[src[k]] + mset[sets[k]])
            cur[gstate[j]] = m
        hist[i + 1] = cur
        if i == 0:
            prev[start] = NEG  # the buffer is reused as `cur`: a start without in-pairs must not linger
        prev, cur = cur, prev
    return hist


def _backtrack_kernel(hist, M, A, eos_tok, set_ptr, set_members, pad_src, pad_set, sp, end, K):
    """(tokens [n], internal states [n + 1]) of the best path ending at internal state `end`; states[0] is
    -2 if some state on the way has no in-pairs (a bug). sp [S', 3]: each state's pair start, stride, count
    (dp_layout.Block.pairs_of); slots are scanned in that order, keeping the first best as np.argmax does."""
    n = M.shape[0]
    D = set_ptr.size - 1
    tokens = np.empty(n, dtype=np.int64)
    states = np.empty(n + 1, dtype=np.int64)
    states[n] = end
    q = end
    for i in range(n - 1, -1, -1):
        lo, step, count = sp[q, 0], sp[q, 1], sp[q, 2]
        if count == 0:
            states[0] = -2
            return tokens, states
        bp = lo
        best = NEG
        for j in range(count):
            p = lo + j * step
            d = pad_set[p]
            s = NEG
            if d < D:
                for k in range(set_ptr[d], set_ptr[d + 1]):
                    if M[i, set_members[k]] > s:
                        s = M[i, set_members[k]]
            v = hist[i, pad_src[p]] + s
            if j == 0 or v > best:
                best = v
                bp = p
        d = pad_set[bp]
        k0 = set_ptr[d]
        c = set_members[k0]
        for k in range(k0 + 1, set_ptr[d + 1]):
            if M[i, set_members[k]] > M[i, c]:
                c = set_members[k]
        tokens[i] = -1 if c == K + 1 else (eos_tok[i] if c == K else A[i, c])
        q = pad_src[bp]
        states[i] = q
    return tokens, states


class_max_kernel = _jit(_class_max_kernel)
live_class_max_kernel = _jit(_live_class_max_kernel)
sweep_kernel = _jit(_sweep_kernel)
backtrack_kernel = _jit(_backtrack_kernel)


@dataclass(frozen=True)
class NumbaTables:
    """DPTables' arrays in the fixed dtypes the kernels are compiled for (one specialisation each, two
    for the bucket: uint16, or uint32 past 65k classes)."""

    bucket_V: np.ndarray  # uint16 / uint32 [V]: class per token, K + 2 for never-allowed ones
    eos_ids: np.ndarray  # int64
    live_first_K: np.ndarray  # int64 [K]: each class's lowest token id
    live_tokens: np.ndarray  # int64 [V']: token ids of real classes, by class, ascending within one
    class_ptr: np.ndarray  # int64 [K + 1]: offsets into live_tokens
    set_ptr: np.ndarray  # int64 [D + 1]
    set_members: np.ndarray  # uint32
    tblocks: np.ndarray  # int64 [nb, 6]: first, W, T, cols, offset into trow, offset into tsrc
    tsrc: np.ndarray  # uint32: template blocks' sources [W, T, cols] each
    trow: np.ndarray  # uint32: template blocks' set id per [W, T] row
    gstate: np.ndarray  # int64 [G]: the other states with in-pairs (internal ids)
    gptr: np.ndarray  # int64 [G + 1]
    gsrc: np.ndarray  # uint32: their real in-pairs' sources
    gset: np.ndarray  # uint32: and set ids
    pad_src: np.ndarray  # int64 [P']: the numpy layout, which the backtrack walks in the reference's order
    pad_set: np.ndarray  # int64 [P']
    sp: np.ndarray  # int64 [S', 3]: each state's pair start, stride, count in pad_*

    @classmethod
    def from_tables(cls, t: DPTables) -> NumbaTables:
        u32 = lambda a: np.ascontiguousarray(a, dtype=np.uint32)  # noqa: E731
        i64 = lambda a: np.ascontiguousarray(a, dtype=np.int64)  # noqa: E731
        sp = np.zeros((t.n_internal, 3), dtype=np.int64)
        for q, sl in enumerate(t.state_pairs):
            start, stop, step = sl.indices(t.pad_src.size)
            sp[q] = (start, step, len(range(start, stop, step)))
        tblocks, tsrc, soff = [], [], 0
        for b in t.blocks[: t.n_template_blocks]:
            tblocks.append([b.first, b.width, b.templates, b.cols, b.row_off, soff])
            tsrc.append(t.pad_src[b.off : b.off + b.width * b.n_states])
            soff += b.width * b.n_states
        n_trow = sum(b.width * b.templates for b in t.blocks[: t.n_template_blocks])
        gstate, gsrc, gset, gptr = [], [], [], [0]
        for b in t.blocks[t.n_template_blocks :]:
            for q in range(b.first, b.first + b.n_states):
                where = t.state_pairs[q]
                real = t.pad_set[where] < t.n_sets
                gstate.append(q)
                gsrc.append(t.pad_src[where][real])
                gset.append(t.pad_set[where][real])
                gptr.append(gptr[-1] + int(real.sum()))
        cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, dtype=np.int64)  # noqa: E731
        K = t.n_classes
        return cls(
            bucket_V=np.ascontiguousarray(t.token_bucket, dtype=np.uint16 if K + 3 <= 65536 else np.uint32),
            eos_ids=i64(t.eos_ids),
            live_first_K=i64(t.live_tokens[t.class_starts]) if K else np.zeros(0, np.int64),
            live_tokens=i64(t.live_tokens),
            class_ptr=i64(np.append(t.class_starts, t.live_tokens.size)),
            set_ptr=i64(np.append(t.set_starts, t.set_members.size)),
            set_members=u32(t.set_members),
            tblocks=np.asarray(tblocks, dtype=np.int64).reshape(-1, 6),
            tsrc=u32(cat(tsrc)),
            trow=u32(t.row_set[:n_trow]),
            gstate=i64(gstate),
            gptr=i64(gptr),
            gsrc=u32(cat(gsrc)),
            gset=u32(cat(gset)),
            pad_src=i64(t.pad_src),
            pad_set=i64(t.pad_set),
            sp=sp,
        )


_PREPARED: dict[int, NumbaTables] = {}


def prepared(t: DPTables) -> NumbaTables:
    """NumbaTables of `t`, built once per DPTables object and dropped with it."""
    nt = _PREPARED.get(id(t))
    if nt is None:
        nt = _PREPARED[id(t)] = NumbaTables.from_tables(t)
        weakref.finalize(t, _PREPARED.pop, id(t), None)
    return nt


def class_max(t: DPTables, logits_nV: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(M [n, K + 2] float32 as dp.class_max, A [n, K] argmax token per class, EOS argmax token [n])."""
    nt = prepared(t)
    logits = np.ascontiguousarray(logits_nV, dtype=np.float32)
    if logits.ndim != 2 or logits.shape[1] != nt.bucket_V.size:
        raise ValueError(
            f"logits shape {logits.shape}, expected [n, {nt.bucket_V.size}] (the DFA's vocabulary)"
        )
    if nt.eos_ids.size and (nt.eos_ids.min() < 0 or nt.eos_ids.max() >= logits.shape[1]):
        raise ValueError(f"EOS ids {nt.eos_ids.tolist()} outside the vocabulary of {logits.shape[1]}")
    if nt.live_tokens.size * 4 < logits.shape[1]:  # the same switch as dp.class_max
        M, A, eos_tok = live_class_max_kernel(logits, nt.live_tokens, nt.class_ptr, nt.eos_ids, t.n_classes)
        logits.max(axis=1, out=M[:, t.n_classes + 1])
        return M, A, eos_tok
    return class_max_kernel(logits, nt.bucket_V, nt.eos_ids, nt.live_first_K, t.n_classes)


def viterbi(t: DPTables, logits_nV: np.ndarray, start: int, end_limit: int) -> tuple[list, list, float]:
    """(tokens [n], external states [n + 1], score) of the best path from external state `start` whose end
    state has dist <= end_limit; what dp.best_path returns, token for token."""
    nt = prepared(t)
    M, A, eos_tok = class_max(t, logits_nV)
    hist = sweep_kernel(
        M,
        nt.set_ptr,
        nt.set_members,
        nt.tblocks,
        nt.tsrc,
        nt.trow,
        nt.gstate,
        nt.gptr,
        nt.gsrc,
        nt.gset,
        int(t.to_internal[start]),
        t.n_internal,
    )
    n = M.shape[0]
    masked = np.where(t.end_dist <= end_limit, hist[n, :-1], NEG)
    end = int(masked.argmax())
    if masked[end] == NEG:
        raise RuntimeError(f"no valid path from state {start} in {n} tokens (budget {end_limit}); a bug")
    tokens, states = backtrack_kernel(
        hist, M, A, eos_tok, nt.set_ptr, nt.set_members, nt.pad_src, nt.pad_set, nt.sp, end, t.n_classes
    )
    if states[0] == -2:
        raise RuntimeError("a state on the best path has no in-pairs; a bug")
    return tokens.tolist(), t.to_external[states].tolist(), float(masked[end])
