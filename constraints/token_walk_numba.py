"""Compiled (numba) kernels of the token automaton build: the vocabulary walk, the column grouping and the
token-distance search.

Legend: S byte states (row S of delta is the dead state), N trie nodes (0 is the root, the empty prefix),
Q a chunk of byte states, V vocabulary, K groups of equal columns.

dfa.py's `walk` (the trie a level at a time over a whole chunk of states in numpy) and `_propose_groups`
(a float hash of each column, then a check row by row in Python) are the references: the spec, kept for
small automata and compared with these kernels by tests/constraints/test_token_walk_numba.py. On large
automata they spend their time on nodes live from some state of the chunk but dead from most of the others
(numpy computes every such (state, node) pair) and on one Python step per row of the check. Here:

- `preorder_trie` (numpy, once per build): the trie's nodes renumbered in depth-first preorder, so that a
  node's subtree is the range of nodes up to its `skip`; `walk_preorder` then walks each state of the
  chunk on its own down that array, jumping over a subtree as soon as its root is dead from the state: it
  visits only the nodes live from that state (plus one dead child per live branch), with no stack.
- `hashed_groups`: the reference's hash (the same integer weights, summed exactly: every partial sum is an
  integer below 2^53), its groups numbered in the same order (sorted by the pair of sums, first column of
  each), confirmed element by element in one compiled pass; None where the reference would fall back.
- `bfs`: dfa.py's `_bfs` (fewest class edges from the sources to each state) as one first-in first-out
  search over edges sorted by source: the reference runs a numpy round per distance, each with a sort of
  the frontier (a deep automaton's 1,000 rounds: ~2 s over the 65 slowest harness schemas). Distances
  are unique, so both give the same array.

Imported only for large automata (from piece_nfa.py's `NUMBA_STATES` byte states on: the byte automaton's
build has then loaded numba already). Numpy and numba only: the compile worker (dfa.py run as a script)
must not load torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from constraints.automaton_numba import _jit


@dataclass
class PreorderTrie:
    """The vocabulary's byte trie in depth-first preorder (node 0 the root)."""

    depth_N: np.ndarray  # int64 [N]: bytes of the node's prefix
    byte_N: np.ndarray  # int64 [N]: last byte of the prefix (unused at the root)
    skip_N: np.ndarray  # int64 [N]: first node after the node's subtree
    end_ptr: np.ndarray  # int64 [N+1]: tokens ending at node n are end_tid[end_ptr[n]:end_ptr[n+1]]
    end_tid: np.ndarray  # int64: token ids


def preorder_trie(parent: list[np.ndarray], byte: list[np.ndarray], ends: list[tuple]) -> PreorderTrie:
    """dfa.py's level-by-level trie (`_Trie` fields: per level d >= 1 the parent index into level d-1 and
    the byte; per level the token ids ending there and their node index) in depth-first preorder, siblings
    in the order of their index. A level at a time in numpy: the trie is as deep as the longest token."""
    n_d = [1] + [int(p.size) for p in parent[1:]]
    size = [np.ones(n, dtype=np.int64) for n in n_d]  # nodes in each node's subtree, leaves up
    for d in range(len(parent) - 1, 0, -1):
        size[d - 1] += np.bincount(parent[d], size[d], n_d[d - 1]).astype(np.int64)
    # a node comes right after its parent and its earlier siblings' subtrees
    pos = [np.zeros(1, dtype=np.int64)]  # per level: each node's place in preorder
    for d in range(1, len(parent)):
        sib = np.argsort(parent[d], kind="stable")  # siblings side by side, in the order of their index
        par, sz = parent[d][sib], size[d][sib]
        before = np.cumsum(sz) - sz  # subtree nodes of the level before each node ...
        first = np.searchsorted(par, par)  # ... less those before its first sibling
        at = np.empty(n_d[d], dtype=np.int64)
        at[sib] = pos[d - 1][par] + 1 + before - before[first]
        pos.append(at)
    N = sum(n_d)
    depth_N = np.zeros(N, dtype=np.int64)
    byte_N = np.zeros(N, dtype=np.int64)
    skip_N = np.full(N, N, dtype=np.int64)
    for d in range(1, len(parent)):
        depth_N[pos[d]] = d
        byte_N[pos[d]] = byte[d]
        skip_N[pos[d]] = pos[d] + size[d]
    end_node = np.concatenate([pos[d][np.asarray(n, dtype=np.int64)] for d, (_, n) in enumerate(ends)])
    end_tid = np.concatenate([np.asarray(t, dtype=np.int64) for t, _ in ends])
    by_node = np.argsort(end_node, kind="stable")
    return PreorderTrie(
        depth_N=depth_N,
        byte_N=byte_N,
        skip_N=skip_N,
        end_ptr=np.searchsorted(end_node[by_node], np.arange(N + 1)).astype(np.int64),
        end_tid=end_tid[by_node],
    )


@_jit
def _walk_kernel(delta, states_Q, depth_N, byte_N, skip_N, end_ptr, end_tid, out_QV):  # pragma: no cover
    dead = delta.shape[0] - 1
    N = depth_N.shape[0]
    at = np.empty(int(depth_N.max()) + 1, dtype=np.int32)  # the state after each byte of the current path
    for qi in range(states_Q.shape[0]):
        at[0] = states_Q[qi]
        i = 1
        while i < N:
            d = depth_N[i]
            t = delta[at[d - 1], byte_N[i]]
            if t == dead:  # dead from here on: the whole subtree stays dead
                i = skip_N[i]
                continue
            at[d] = t
            for e in range(end_ptr[i], end_ptr[i + 1]):
                out_QV[qi, end_tid[e]] = t
            i += 1


def walk_preorder(delta: np.ndarray, trie: PreorderTrie, states: np.ndarray, n_vocab: int) -> np.ndarray:
    """Next state of every token from each of `states`: int32 [Q, V]; dead (= S) where not allowed.
    Exactly dfa.py's `walk`."""
    out_QV = np.full((states.shape[0], n_vocab), delta.shape[0] - 1, dtype=np.int32)
    if trie.depth_N.size > 1:
        _walk_kernel(
            np.ascontiguousarray(delta, dtype=np.int32),
            states.astype(np.int64),
            trie.depth_N,
            trie.byte_N,
            trie.skip_N,
            trie.end_ptr,
            trie.end_tid,
            out_QV,
        )
    return out_QV


@_jit
def _group_kernel(nxt_QV, w_2Q):  # pragma: no cover - compiled
    Q, V = nxt_QV.shape
    h0 = np.zeros(V, dtype=np.float64)
    h1 = np.zeros(V, dtype=np.float64)
    for q in range(Q):  # row by row: each row is read once, in order
        a, b = w_2Q[0, q], w_2Q[1, q]
        for v in range(V):
            x = np.float64(nxt_QV[q, v])
            h0[v] += a * x
            h1[v] += b * x
    # columns with the same pair of sums: one group, numbered as first seen (open addressing)
    cap = 16
    while cap < 2 * V:
        cap *= 2
    table = np.full(cap, -1, dtype=np.int64)
    group = np.empty(V, dtype=np.int64)
    first = np.empty(V, dtype=np.int64)
    K = 0
    for v in range(V):
        key = np.uint64(np.int64(h0[v])) * np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(np.int64(h1[v]))
        slot = np.int64((key ^ (key >> np.uint64(31))) & np.uint64(cap - 1))
        g = -1
        while table[slot] >= 0:
            f = first[table[slot]]
            if h0[f] == h0[v] and h1[f] == h1[v]:
                g = table[slot]
                break
            slot = (slot + 1) & (cap - 1)
        if g < 0:
            g = K
            first[K] = v
            table[slot] = K
            K += 1
        group[v] = g
    # every column equals its group's first one (else two columns share their sums: a collision)
    rep = first[group]
    ok = True
    for q in range(Q):
        for v in range(V):
            if nxt_QV[q, v] != nxt_QV[q, rep[v]]:
                ok = False
        if not ok:
            break
    return group, first[:K].copy(), h0, h1, ok


def hashed_groups(nxt_QV: np.ndarray, w_2Q: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(group of each column [V], first column of each group [K]) as dfa.py's `_propose_groups` gives them
    for the integer weights `w_2Q` (float64 [2, Q]), or None where two different columns share their sums."""
    group, first, h0, h1, ok = _group_kernel(
        np.ascontiguousarray(nxt_QV, dtype=np.int32), np.ascontiguousarray(w_2Q, dtype=np.float64)
    )
    if not ok:
        return None
    # the reference's numbering: groups in order of (first sum, second sum)
    order_K = np.lexsort((h1[first], h0[first]))
    rank = np.empty(first.size, dtype=np.int64)
    rank[order_K] = np.arange(first.size)
    return rank[group], first[order_K]


@_jit
def _bfs_kernel(src_E, dst_E, n, sources, dist_N):  # pragma: no cover - compiled
    start = np.zeros(n + 1, dtype=np.int64)  # edges out of each node, CSR by source
    for e in range(src_E.size):
        start[src_E[e] + 1] += 1
    for i in range(n):
        start[i + 1] += start[i]
    nbr = np.empty(src_E.size, dtype=np.int64)
    fill = start[:-1].copy()
    for e in range(src_E.size):
        nbr[fill[src_E[e]]] = dst_E[e]
        fill[src_E[e]] += 1
    queue = np.empty(n, dtype=np.int64)
    tail = 0
    for s in sources:
        if dist_N[s] < 0:
            dist_N[s] = 0
            queue[tail] = s
            tail += 1
    head = 0
    while head < tail:
        u = queue[head]
        head += 1
        for e in range(start[u], start[u + 1]):
            v = nbr[e]
            if dist_N[v] < 0:
                dist_N[v] = dist_N[u] + 1
                queue[tail] = v
                tail += 1


def bfs(src: np.ndarray, dst: np.ndarray, n: int, sources: np.ndarray) -> np.ndarray:
    """Fewest edges from `sources` to each of n nodes along src -> dst (-1: unreachable): int64 [n], exactly
    dfa.py's `_bfs`."""
    dist = np.full(n, -1, dtype=np.int64)
    _bfs_kernel(
        np.ascontiguousarray(src, dtype=np.int64),
        np.ascontiguousarray(dst, dtype=np.int64),
        n,
        np.ascontiguousarray(sources, dtype=np.int64),
        dist,
    )
    return dist
