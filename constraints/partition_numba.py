"""Compiled (numba) Hopcroft minimisation: the coarsest stable partition of a DFA's states.

Legend: N states of a DFA table (the dead row last), C byte classes, E stored inverse transitions.

`coarsest_partition` is Hopcroft's partition refinement over inverse transitions, O(N C log N)
(https://en.wikipedia.org/wiki/DFA_minimization#Hopcroft's_algorithm). moore.py's `moore_blocks`
(hashed Moore refinement) is the reference, compared with it by tests/constraints/test_automaton_numba.py.
The coarsest partition that refines the initial blocks and is stable under every class is unique, so the
caller's numbering of the blocks (by first member) gives exactly the automaton the reference gives, however
the splits were ordered here. Two savings over the textbook form, both measured on 200 large minimisations
of slow JSONSchemaBench schemas (4.9 s -> 1.4 s): the moves into the dead state (~90% of a composed
schema's table) are neither stored nor scanned, and a splitter's moves are read once and sorted by class
rather than once per class. `quotient` then writes the minimal automaton's table from the partition
(byte_automaton.py's `_quotient` is the reference: a sort of the blocks and a 256-wide gather in numpy).

Imported only for large automata, as automaton_numba.py (whose `_jit` it uses).
"""

from __future__ import annotations

import numpy as np

from constraints.automaton_numba import _jit


@_jit
def _partition_kernel(cols_NC, block_N, n_blocks):  # pragma: no cover - compiled
    N, C = cols_NC.shape
    blk = block_N.astype(np.int64).copy()
    # inverse transitions by target: the (source, class) pairs that move into it, sources ascending
    cnt = np.zeros(N + 1, dtype=np.int64)
    for s in range(N):
        for c in range(C):
            cnt[cols_NC[s, c] + 1] += 1
    # every initial block but one is a splitter: a partition stable under all the others is stable under
    # that one too (a move lands in it exactly when it lands in none of the others). Left out: the block
    # with the most moves into it, the dead state as a rule (every missing move of the table: ~90% of the
    # cells of a composed schema's automaton); a block of one state never splits, so its moves are never
    # read and not even stored
    indeg = np.zeros(n_blocks + 1, dtype=np.int64)
    size = np.zeros(n_blocks + 1, dtype=np.int64)
    for t in range(N):
        indeg[blk[t]] += cnt[t + 1]
        size[blk[t]] += 1
    skip = np.argmax(indeg[:n_blocks]) if n_blocks > 0 else -1
    drop = -1
    if skip >= 0 and size[skip] == 1:
        for t in range(N):
            if blk[t] == skip:
                drop = t
        cnt[drop + 1] = 0
    for t in range(N):
        cnt[t + 1] += cnt[t]
    E = cnt[N]
    src = np.empty(E, dtype=np.int32)
    cls = np.empty(E, dtype=np.int32)
    fill = cnt[:-1].copy()
    for s in range(N):
        for c in range(C):
            t = cols_NC[s, c]
            if t != drop:
                src[fill[t]] = s
                cls[fill[t]] = c
                fill[t] += 1
    # blocks as ranges of `elems`; [first, mid) holds the states marked in the current step
    elems = np.argsort(block_N, kind="mergesort").astype(np.int64)
    loc = np.empty(N, dtype=np.int64)
    for i in range(N):
        loc[elems[i]] = i
    first = np.zeros(N + 1, dtype=np.int64)
    end = np.zeros(N + 1, dtype=np.int64)
    for i in range(N):
        b = blk[elems[i]]
        if i == 0 or blk[elems[i - 1]] != b:
            first[b] = i
        end[b] = i + 1
    mid = first.copy()
    work = np.empty(N + 1, dtype=np.int64)
    n_work = 0
    for b in range(n_blocks):
        if b != skip:
            work[n_work] = b
            n_work += 1
    touched = np.empty(N + 1, dtype=np.int64)
    bucket = np.empty(E, dtype=np.int32)  # the splitter's sources, by class
    start = np.empty(C + 1, dtype=np.int64)
    nb_total = n_blocks
    while n_work > 0:
        n_work -= 1
        w = work[n_work]
        # the moves into the splitter as it is now (it may split while it is used), counting-sorted by
        # class: one pass over its moves, not one per class over its states
        start[:] = 0
        for i in range(first[w], end[w]):
            t = elems[i]
            for e in range(cnt[t], cnt[t + 1]):
                start[cls[e] + 1] += 1
        for c in range(C):
            start[c + 1] += start[c]
        for i in range(first[w], end[w]):
            t = elems[i]
            for e in range(cnt[t], cnt[t + 1]):
                bucket[start[cls[e]]] = src[e]
                start[cls[e]] += 1
        lo = 0  # start[c] is now the end of class c's sources
        for c in range(C):
            hi = start[c]
            n_touched = 0
            for j in range(lo, hi):
                s = bucket[j]
                b = blk[s]
                if mid[b] == first[b]:
                    touched[n_touched] = b
                    n_touched += 1
                k = loc[s]
                if k >= mid[b]:  # not yet marked: swap it to the marked front of its block
                    m = mid[b]
                    u = elems[m]
                    elems[m], elems[k] = s, u
                    loc[s], loc[u] = m, k
                    mid[b] = m + 1
            lo = hi
            for q in range(n_touched):
                b = touched[q]
                if mid[b] == end[b]:  # every state of the block moves into the splitter: no split
                    mid[b] = first[b]
                    continue
                # the smaller part becomes the new block (relabelled), and is the one to split by next
                nb = nb_total
                nb_total += 1
                if mid[b] - first[b] <= end[b] - mid[b]:
                    first[nb], end[nb] = first[b], mid[b]
                    first[b] = mid[b]
                else:
                    first[nb], end[nb] = mid[b], end[b]
                    end[b] = mid[b]
                mid[b] = first[b]
                mid[nb] = first[nb]
                for i in range(first[nb], end[nb]):
                    blk[elems[i]] = nb
                work[n_work] = nb
                n_work += 1
    return blk


def coarsest_partition(cols_NC: np.ndarray, block_N: np.ndarray) -> np.ndarray:
    """Block id per state [N] of the coarsest partition that refines `block_N` (dense ids 0..B-1) and in
    which states of one block move into one block on every class of `cols_NC` [N, C] (a total table)."""
    n_blocks = int(block_N.max()) + 1 if block_N.size else 0
    cols_NC = np.ascontiguousarray(cols_NC, dtype=np.int32)
    return _partition_kernel(cols_NC, block_N.astype(np.int64), n_blocks)


@_jit
def _first_members(block_N, rank_B, first_N):  # pragma: no cover - compiled
    """Dense block ids in the order of their first state (rank_B, all -1 on entry); first_N[i] the first
    state of block i. Returns the number of blocks."""
    m = 0
    for s in range(block_N.size):
        b = block_N[s]
        if rank_B[b] < 0:
            rank_B[b] = m
            first_N[m] = s
            m += 1
    return m


@_jit
def _quotient_kernel(block_N, rank_B, first_N, cols_NC, cls_256, final_n, out, fin):  # pragma: no cover
    m = fin.size
    C = cols_NC.shape[1]
    row = np.empty(C, dtype=np.int32)
    for i in range(m):
        s = first_N[i]
        for c in range(C):
            row[c] = rank_B[block_N[cols_NC[s, c]]]
        for b in range(cls_256.size):
            out[i, b] = row[cls_256[b]]
        fin[i] = final_n[s]
    out[m, :] = m


def quotient(
    cols_NC: np.ndarray, cls_256: np.ndarray, final_n: np.ndarray, block_N: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(delta [m+1, B] int32 with dead row m, final [m]) of the automaton whose states are the blocks of
    `block_N` [n+1] (a congruence of the states of `cols_NC` [n+1, C], byte b moving as column cls_256[b]:
    B = 256, or B = C with cls_256 = arange(C) for the quotient by class,
    the dead row n alone in the last block to appear), numbered by first member: byte_automaton.py's
    `_quotient`, the same arrays. The table is allocated here, in numpy (see determinise_numba.py)."""
    block_N = np.ascontiguousarray(block_N, dtype=np.int64)
    rank_B = np.full(int(block_N.max()) + 1, -1, dtype=np.int64)
    first_N = np.empty(block_N.size, dtype=np.int64)
    m = _first_members(block_N, rank_B, first_N) - 1
    out = np.empty((m + 1, cls_256.size), dtype=np.int32)
    fin = np.empty(m, dtype=np.bool_)
    _quotient_kernel(
        block_N,
        rank_B,
        first_N,
        np.ascontiguousarray(cols_NC),
        np.ascontiguousarray(cls_256, dtype=np.int64),
        np.ascontiguousarray(final_n, dtype=np.bool_),
        out,
        fin,
    )
    return out, fin
