"""Compiled (numba) kernels of the byte automaton build: byte classes, co-reachable states and subset
exploration (Hopcroft minimisation: partition_numba.py).

Legend: N states of a DFA table (the dead row last), C byte classes, G states of a composed NFA (+1: the
dead state G), K subsets explored.

byte_automaton.py's `minimise` (hashed Moore refinement) and piece_nfa.py's `_explore` (subset
construction a breadth-first level at a time in numpy) are the references: the spec, kept for small
automata and compared with these kernels by tests/constraints/test_automaton_numba.py. Past a few thousand
states they spend their time in per-round sorts (Moore needs as many rounds as the longest distinguishing
word: 60 for a 44k-state union of two objects) and in a Python step per new subset (30k subsets for the
same union). Here:

- `coarsest_partition` (partition_numba.py): Hopcroft's minimisation, on the same `_jit`.
- `byte_class_reps`: the classes of identical byte columns, refined row by row (exact; the reference
  `_byte_class_reps` hashes every column in numpy, ~100 MB of temporaries for a 50k-state table).
- `bfs_renumbered`: bfs_numbering.py's breadth-first numbering (its reference), one search, one pass.
- `coreachable`: the states that can reach a final state, by a depth-first search over reversed edges
  (the reference: `_trim`'s level-by-level search in numpy).
- `explore_subsets`: the subsets reachable from the given ones, first in, first out, a new subset numbered
  when first seen (subset order, then class order): the order the reference's level-by-level batches
  number them in, so both return the same table.

Imported only for large automata (the import costs ~0.3 s; see piece_nfa.py `NUMBA_STATES`).
"""

from __future__ import annotations

import numpy as np
from numba import njit


def _jit(fn):
    """njit with an on-disk cache; where numba finds no writable cache location it raises at decoration
    time: fall back to an uncached compile (as constraints/dp_numba.py does)."""
    try:
        return njit(cache=True, nogil=True)(fn)
    except RuntimeError:
        return njit(cache=False, nogil=True)(fn)


@_jit
def _byte_classes_kernel(delta_NB):  # pragma: no cover - compiled
    N, B = delta_NB.shape
    cls = np.zeros(B, dtype=np.int64)
    rep = np.zeros(B, dtype=np.int64)  # first column of each class
    rep_of = np.zeros(B, dtype=np.int64)  # first column of each column's class (one lookup per cell)
    n_cls = 1
    for r in range(N):
        split = False
        for c in range(B):
            if delta_NB[r, c] != delta_NB[r, rep_of[c]]:
                split = True
                break
        if not split:  # the usual row: every column agrees with its class's first one
            continue
        new = np.full(B, -1, dtype=np.int64)
        n_cls = 0
        for c in range(B):  # classes numbered by first column, so `rep` stays ascending
            if new[c] >= 0:
                continue
            new[c] = n_cls
            rep[n_cls] = c
            for d in range(c + 1, B):
                if new[d] < 0 and cls[d] == cls[c] and delta_NB[r, d] == delta_NB[r, c]:
                    new[d] = n_cls
            n_cls += 1
        cls = new
        for c in range(B):
            rep_of[c] = rep[cls[c]]
    return cls, rep[:n_cls].copy()


def byte_classes(delta_NB: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class of each column [B], first column of each class, ascending) for the classes of identical
    columns of `delta_NB` [N, B], numbered by first column; exact (no hashes): the classes are refined row by
    row, and only a row on which some column leaves its class's first one (at most B - 1 rows) regroups
    them."""
    return _byte_classes_kernel(np.ascontiguousarray(delta_NB, dtype=np.int32))


def byte_class_reps(delta_NB: np.ndarray) -> np.ndarray:
    """The first column of each class of identical columns of `delta_NB`, ascending."""
    return byte_classes(delta_NB)[1]


@_jit
def _coreachable_kernel(delta_NB, final_N):  # pragma: no cover - compiled
    n = final_N.size
    B = delta_NB.shape[1]
    # distinct reversed edges, CSR by target (a row sends most bytes to a few targets: counted once)
    stamp = np.full(n, -1, dtype=np.int64)
    cnt = np.zeros(n + 1, dtype=np.int64)
    for s in range(n):
        for b in range(B):
            t = delta_NB[s, b]
            if t < n and stamp[t] != s:
                stamp[t] = s
                cnt[t + 1] += 1
    for t in range(n):
        cnt[t + 1] += cnt[t]
    src = np.empty(cnt[n], dtype=np.int32)
    fill = cnt[:n].copy()
    stamp[:] = -1
    for s in range(n):
        for b in range(B):
            t = delta_NB[s, b]
            if t < n and stamp[t] != s:
                stamp[t] = s
                src[fill[t]] = s
                fill[t] += 1
    live = final_N.copy()
    stack = np.nonzero(final_N)[0].astype(np.int64)
    todo = np.empty(n, dtype=np.int64)
    top = stack.size
    todo[:top] = stack
    while top > 0:
        top -= 1
        t = todo[top]
        for e in range(cnt[t], cnt[t + 1]):
            s = src[e]
            if not live[s]:
                live[s] = True
                todo[top] = s
                top += 1
    return live


def coreachable(delta_NB: np.ndarray, final_N: np.ndarray) -> np.ndarray:
    """Bool [N]: the states of the table `delta_NB` [N+1, B] (row N dead) from which a final state can be
    reached (depth-first over the distinct reversed edges)."""
    return _coreachable_kernel(np.ascontiguousarray(delta_NB, dtype=np.int32), final_N.astype(np.bool_))


@_jit
def _bfs_renumber_kernel(delta_NB, live_N):  # pragma: no cover - compiled
    n, B = delta_NB.shape[0] - 1, delta_NB.shape[1]
    m = 0
    for s in range(n):
        if live_N[s]:
            m += 1
    new = np.full(n + 1, -1, dtype=np.int32)  # -1: a live state not met yet
    for s in range(n + 1):
        if s == n or not live_N[s]:
            new[s] = m  # the dead state, and the states that cannot reach a final one
    order = np.empty(m, dtype=np.int64)
    order[0] = 0
    new[0] = 0
    k, head = 1, 0
    while head < k:
        s = order[head]
        head += 1
        for b in range(B):
            t = delta_NB[s, b]
            if new[t] < 0:
                new[t] = k
                order[k] = t
                k += 1
    for t in range(n):  # live but never met (none in a minimal automaton): ascending, last
        if new[t] < 0:
            new[t] = k
            order[k] = t
            k += 1
    out = np.empty((m + 1, B), dtype=np.int32)
    for i in range(m):
        s = order[i]
        for b in range(B):
            out[i, b] = new[delta_NB[s, b]]
    out[m, :] = m
    return out, order


def bfs_renumbered(
    delta_NB: np.ndarray, final_N: np.ndarray, live_N: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """bfs_numbering.py's `bfs_renumbered`: the live states of the table `delta_NB` [N+1, B] numbered in the
    order a first-in first-out search from state 0 meets them (successors by byte ascending), the others
    dead, in one search and one pass writing the table."""
    out, order = _bfs_renumber_kernel(np.ascontiguousarray(delta_NB, dtype=np.int32), live_N.astype(np.bool_))
    return out, final_N[order]


@_jit
def _hash(members, lo, hi):  # pragma: no cover - compiled
    h = np.uint64(1469598103934665603)
    for i in range(lo, hi):
        h = (h ^ np.uint64(members[i])) * np.uint64(1099511628211)
        h ^= h >> np.uint64(29)
    return h


@_jit
def _explore_kernel(cols, of_state, linked, clos_ptr, clos_idx, init_ptr, init_mem, G):  # pragma: no cover
    C = cols.shape[1]
    ptr = np.empty(max(16, 2 * init_ptr.size), dtype=np.int64)
    ptr[: init_ptr.size] = init_ptr
    mem = np.empty(max(64, 2 * init_mem.size), dtype=np.int64)
    mem[: init_mem.size] = init_mem
    K = init_ptr.size - 1
    rows = np.empty((max(16, 2 * K), C), dtype=np.int64)
    cap = 1024
    while cap < 4 * K:
        cap *= 2
    table = np.full(cap, -1, dtype=np.int64)  # open addressing: subset index per slot
    hashes = np.empty(ptr.size, dtype=np.uint64)  # grows with ptr
    for k in range(K):
        h = _hash(mem, ptr[k], ptr[k + 1])
        hashes[k] = h
        slot = np.int64(h & np.uint64(cap - 1))
        while table[slot] >= 0:
            slot = (slot + 1) & (cap - 1)
        table[slot] = k
    buf = np.empty(64, dtype=np.int64)
    seen = np.zeros(G + 1, dtype=np.bool_)
    done = 0
    while done < K:
        lo, hi = ptr[done], ptr[done + 1]
        for c in range(C):
            n_buf = 0
            n_targets = 0
            single = G
            for i in range(lo, hi):
                t = cols[mem[i], c]
                if t == G or seen[t]:  # (a target in an earlier target's closure adds nothing to the set)
                    continue
                seen[t] = True
                n_targets += 1
                single = t
                if linked[t]:
                    a, b = clos_ptr[t], clos_ptr[t + 1]
                else:
                    a, b = 0, 0
                need = n_buf + 1 + (b - a)
                if need > buf.size:
                    nbuf = np.empty(2 * need, dtype=np.int64)
                    nbuf[:n_buf] = buf[:n_buf]
                    buf = nbuf
                buf[n_buf] = t
                n_buf += 1
                for e in range(a, b):
                    x = clos_idx[e]
                    if not seen[x]:
                        seen[x] = True
                        buf[n_buf] = x
                        n_buf += 1
            for i in range(n_buf):  # clear the marks: the set's members, each once
                seen[buf[i]] = False
            if n_targets == 0:
                rows_val = G
            elif n_targets == 1:  # one target and its closure: the subset it stands for
                rows_val = of_state[single]
            else:
                # the members, sorted (distinct already): in place, by insertion while few
                if n_buf <= 32:
                    for i in range(1, n_buf):
                        x = buf[i]
                        j = i - 1
                        while j >= 0 and buf[j] > x:
                            buf[j + 1] = buf[j]
                            j -= 1
                        buf[j + 1] = x
                    cand = buf[:n_buf]
                else:
                    cand = np.sort(buf[:n_buf])
                h = _hash(cand, 0, cand.size)
                slot = np.int64(h & np.uint64(cap - 1))
                found = -1
                while table[slot] >= 0:
                    k = table[slot]
                    if hashes[k] == h and ptr[k + 1] - ptr[k] == cand.size:
                        same = True
                        for i in range(cand.size):
                            if mem[ptr[k] + i] != cand[i]:
                                same = False
                                break
                        if same:
                            found = k
                            break
                    slot = (slot + 1) & (cap - 1)
                if found < 0:  # a new subset: store it, index it, queue it
                    found = K
                    if K + 2 > ptr.size:
                        nptr = np.empty(2 * ptr.size, dtype=np.int64)
                        nptr[: K + 1] = ptr[: K + 1]
                        ptr = nptr
                        nh = np.empty(2 * hashes.size, dtype=np.uint64)
                        nh[:K] = hashes[:K]
                        hashes = nh
                    if ptr[K] + cand.size > mem.size:
                        nmem = np.empty(2 * (ptr[K] + cand.size), dtype=np.int64)
                        nmem[: ptr[K]] = mem[: ptr[K]]
                        mem = nmem
                    mem[ptr[K] : ptr[K] + cand.size] = cand
                    ptr[K + 1] = ptr[K] + cand.size
                    hashes[K] = h
                    table[slot] = K
                    K += 1
                    if 2 * K > cap:  # keep the table at most half full: rebuild it twice the size
                        cap *= 2
                        table = np.full(cap, -1, dtype=np.int64)
                        for k in range(K):
                            s2 = np.int64(hashes[k] & np.uint64(cap - 1))
                            while table[s2] >= 0:
                                s2 = (s2 + 1) & (cap - 1)
                            table[s2] = k
                rows_val = G + 1 + found
            if done >= rows.shape[0]:
                nrows = np.empty((2 * rows.shape[0], C), dtype=np.int64)
                nrows[:done] = rows[:done]
                rows = nrows
            rows[done, c] = rows_val
        done += 1
    return ptr[: K + 1].copy(), mem[: ptr[K]].copy(), rows[:K].copy()


def explore_subsets(
    cols: np.ndarray,
    of_state: np.ndarray,
    linked: np.ndarray,
    closures: list[np.ndarray],
    initial: list[np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Subset construction from the `initial` subsets (sorted member arrays, numbered G+1, G+2, ...).

    cols [G+1, C]: next NFA state per class (G: dead). of_state [G+1]: the subset a single target stands
    for (itself, or its closure's number when linked). closures: per linked state (ascending), its closure
    over the links, sorted. Returns (ptr [K+1], members, rows [K, C]): the members of every subset (initial
    ones first, then in the order first seen) and the number of its successor on each class (a single
    target's of_state, G when none, G+1+k for subset k).
    """
    G = cols.shape[0] - 1
    clos_ptr = np.zeros(G + 2, dtype=np.int64)
    lens = np.zeros(G + 1, dtype=np.int64)
    states = np.nonzero(linked)[0]
    for s, cl in zip(states.tolist(), closures):
        lens[s] = cl.size
    clos_ptr[1:] = np.cumsum(lens)
    clos_idx = np.concatenate(closures).astype(np.int64) if closures else np.zeros(0, dtype=np.int64)
    init_ptr = np.zeros(len(initial) + 1, dtype=np.int64)
    init_ptr[1:] = np.cumsum([m.size for m in initial])
    init_mem = np.concatenate(initial).astype(np.int64) if initial else np.zeros(0, dtype=np.int64)
    return _explore_kernel(
        np.ascontiguousarray(cols, dtype=np.int32),  # (piece_nfa.py `piece_cols`: int32, no copy)
        of_state.astype(np.int64),
        linked.astype(np.bool_),
        clos_ptr,
        clos_idx,
        init_ptr,
        init_mem,
        G,
    )
