"""Compiled (numba) kernels of the token automaton build: the token classes and their edges, and the
token-distance search.

Legend: S byte states (row S of delta is the dead state), N trie nodes (0 is the root, the empty prefix),
V vocabulary, K token classes, P (token, next state) pairs allowed, E class edges.

dfa.py's `dense_classes` (every token from every state: [Q, V] tables of next states a chunk at a time,
their columns grouped) and `_bfs` are the references: the spec, kept for small automata and compared with
these kernels by tests/constraints/test_token_walk_numba.py. On large automata the tables are mostly dead:
on the slow JSONSchemaBench schemas a token is allowed from a state in 1-10% of the pairs (o38670: 3.6M of
255M), and the reference writes, hashes and compares every one of them. Here:

- `preorder_trie` (numpy, once per build): the trie's nodes renumbered in depth-first preorder, so that a
  node's subtree is the range of nodes up to its `skip`; a state's walk then goes down that array from each
  byte its row allows, jumping over a subtree as soon as its root is dead from the state: it visits only the
  nodes live from that state (plus one dead child per live branch), with no stack.
- `sparse_classes`: partition refinement over the allowed pairs only. All tokens start in one class; each
  state's pairs, bucketed by class, split a class by next state (the tokens dead from the state stay
  behind), so two tokens end together exactly when their next states agree everywhere. The pairs are kept
  (up to KEPT_PAIRS) and the edges read off them: one per state and class. Classes are then numbered by
  first token and edges sorted by (source, class), as the reference numbers and sorts them.
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

# (token, destination) pairs kept from the class walk for the edges (8 bytes each: 128 MiB); a build with
# more walks its later states a second time
KEPT_PAIRS = 1 << 24


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
def _walk_state(delta, s, root_B, depth_N, byte_N, skip_N, end_ptr, end_tid,
                at, tok_M, dst_M):  # pragma: no cover - compiled
    """The tokens allowed from byte state `s` and where each leads; returns their count. The first byte
    from the state's row (a live byte, then its subtree), deeper bytes down the preorder trie."""
    dead = delta.shape[0] - 1
    m = 0
    for b in range(delta.shape[1]):
        t = delta[s, b]
        r = root_B[b]
        if t == dead or r < 0:
            continue
        at[1] = t
        for e in range(end_ptr[r], end_ptr[r + 1]):
            tok_M[m] = end_tid[e]
            dst_M[m] = t
            m += 1
        i, stop = r + 1, skip_N[r]
        while i < stop:
            d = depth_N[i]
            t = delta[at[d - 1], byte_N[i]]
            if t == dead:  # dead from here on: the whole subtree stays dead
                i = skip_N[i]
                continue
            at[d] = t
            for e in range(end_ptr[i], end_ptr[i + 1]):
                tok_M[m] = end_tid[e]
                dst_M[m] = t
                m += 1
            i += 1
    return m


@_jit
def _refine_kernel(delta, root_B, depth_N, byte_N, skip_N, end_ptr, end_tid,
                   cls_V, tok_P, dst_P, ptr_S):  # pragma: no cover - compiled
    """Split the token classes `cls_V` (all 0 on entry) state by state: tokens stay together while they lead
    to the same state from every state seen so far (a dead token leads nowhere). Each state's (token,
    destination) pairs are kept in tok_P/dst_P (state s: ptr_S[s] to ptr_S[s+1]) while they fit, for the
    edges. Returns (class count, states whose pairs were kept: a first run of them)."""
    n = delta.shape[0] - 1
    V = cls_V.shape[0]
    at = np.empty(int(depth_N.max()) + 1, dtype=np.int64)
    tok_M = np.empty(V, dtype=np.int32)
    dst_M = np.empty(V, dtype=np.int32)
    size_K = np.zeros(V + 1, dtype=np.int64)
    size_K[0] = V
    K = 1
    seen_K = np.full(V + 1, -1, dtype=np.int64)  # the last state a class had an allowed token from
    head_K = np.empty(V + 1, dtype=np.int64)  # that state's entries of the class: a linked list
    next_M = np.empty(V, dtype=np.int64)
    touched = np.empty(V, dtype=np.int64)
    mark_S = np.full(n + 1, -1, dtype=np.int64)  # per (state, class) round: the destinations met ...
    count_S = np.zeros(n + 1, dtype=np.int64)  # ... how many of the class's tokens go there ...
    into_S = np.zeros(n + 1, dtype=np.int64)  # ... and the class they go into
    dests = np.empty(V, dtype=np.int64)
    rnd = 0
    kept = 0
    for s in range(n):
        m = _walk_state(delta, s, root_B, depth_N, byte_N, skip_N, end_ptr, end_tid, at, tok_M, dst_M)
        if kept == s and ptr_S[s] + m <= tok_P.shape[0]:
            tok_P[ptr_S[s] : ptr_S[s] + m] = tok_M[:m]
            dst_P[ptr_S[s] : ptr_S[s] + m] = dst_M[:m]
            ptr_S[s + 1] = ptr_S[s] + m
            kept = s + 1
        n_touched = 0
        for i in range(m):  # the entries, bucketed by class
            c = cls_V[tok_M[i]]
            if seen_K[c] != s:
                seen_K[c] = s
                head_K[c] = -1
                touched[n_touched] = c
                n_touched += 1
            next_M[i] = head_K[c]
            head_K[c] = i
        for j in range(n_touched):
            c = touched[j]
            rnd += 1
            n_dests = 0
            i = head_K[c]
            while i >= 0:
                d = dst_M[i]
                if mark_S[d] != rnd:
                    mark_S[d] = rnd
                    count_S[d] = 0
                    dests[n_dests] = d
                    n_dests += 1
                count_S[d] += 1
                i = next_M[i]
            for k in range(n_dests):  # each destination's tokens become a class of their own, unless ...
                d = dests[k]
                if count_S[d] == size_K[c]:  # ... they are all that is left of the class
                    into_S[d] = c
                else:
                    into_S[d] = K
                    size_K[K] = count_S[d]
                    size_K[c] -= count_S[d]
                    K += 1
            i = head_K[c]
            while i >= 0:
                cls_V[tok_M[i]] = into_S[dst_M[i]]
                i = next_M[i]
    return K, kept


@_jit
def _edges_kernel(delta, s0, root_B, depth_N, byte_N, skip_N, end_ptr, end_tid, tok_P, dst_P, ptr_S, kept,
                  cls_V, seen_K, src_E, cls_E, dst_E, e0):  # pragma: no cover - compiled
    """One edge per (state, class) with an allowed token, from state s0 on, sorted by (state, class), into
    the arrays from e0 on (a state's pairs as kept by `_refine_kernel`, or walked again past `kept`); stops
    before a state that might not fit. Returns (next state, next edge)."""
    n = delta.shape[0] - 1
    V = cls_V.shape[0]
    at = np.empty(int(depth_N.max()) + 1, dtype=np.int64)
    tok_M = np.empty(V, dtype=np.int32)
    dst_M = np.empty(V, dtype=np.int32)
    e = e0
    for s in range(s0, n):
        if src_E.shape[0] - e < seen_K.shape[0]:  # a state has at most one edge per class
            return s, e
        if s < kept:
            lo, hi = ptr_S[s], ptr_S[s + 1]
            tok, dst = tok_P, dst_P
        else:
            lo = 0
            hi = _walk_state(delta, s, root_B, depth_N, byte_N, skip_N, end_ptr, end_tid, at, tok_M, dst_M)
            tok, dst = tok_M, dst_M
        first = e
        for i in range(lo, hi):
            c = cls_V[tok[i]]
            if seen_K[c] != s:
                seen_K[c] = s
                cls_E[e] = c
                dst_E[e] = dst[i]
                e += 1
        if e - first > 1:
            by_cls = np.argsort(cls_E[first:e])
            cls_E[first:e] = cls_E[first:e][by_cls]
            dst_E[first:e] = dst_E[first:e][by_cls]
        src_E[first:e] = s
    return n, e


def sparse_classes(
    delta: np.ndarray, trie: PreorderTrie, n_vocab: int, kept_pairs: int = KEPT_PAIRS
) -> tuple[np.ndarray, ...]:
    """dfa.py's `dense_classes`, exactly: (class of each token [V], classes numbered in the order of their
    first token; edge source, class and destination [E], sorted by (source, class)), one edge per state and
    class with an allowed token. One walk of every state, visiting only the trie nodes live from it, splits
    the classes and keeps each state's (token, destination) pairs; the edges are then read off the pairs
    (past `kept_pairs` of them, from a second walk): nothing of size states x vocabulary is made."""
    n = delta.shape[0] - 1
    delta = np.ascontiguousarray(delta, dtype=np.int32)
    root_B = np.full(256, -1, dtype=np.int64)  # the trie node of each one-byte prefix
    one = np.nonzero(trie.depth_N == 1)[0]
    root_B[trie.byte_N[one]] = one
    walk = (root_B, trie.depth_N, trie.byte_N, trie.skip_N, trie.end_ptr, trie.end_tid)
    cls_V = np.zeros(n_vocab, dtype=np.int64)
    room = min(kept_pairs, n * n_vocab)
    tok_P, dst_P = np.empty(room, dtype=np.int32), np.empty(room, dtype=np.int32)
    ptr_S = np.zeros(n + 1, dtype=np.int64)
    K, kept = 1 if n_vocab else 0, 0
    if trie.depth_N.size > 1 and n_vocab:
        K, kept = _refine_kernel(delta, *walk, cls_V, tok_P, dst_P, ptr_S)
    # classes in the order of their first token (the kernel's own numbering follows the walk's order)
    first_K = np.full(K, n_vocab, dtype=np.int64)
    np.minimum.at(first_K, cls_V, np.arange(n_vocab))
    rank_K = np.empty(K, dtype=np.int64)
    rank_K[np.argsort(first_K, kind="stable")] = np.arange(K)
    cls_V = rank_K[cls_V]
    seen_K = np.full(max(K, 1), -1, dtype=np.int64)
    cap = int(ptr_S[kept]) + 4 * (n - kept) + K + 16  # a state's edges: at most its pairs
    src_E = np.empty(cap, dtype=np.int64)
    cls_E = np.empty(cap, dtype=np.int64)
    dst_E = np.empty(cap, dtype=np.int64)
    s = e = 0
    pairs = (tok_P, dst_P, ptr_S, kept)
    while trie.depth_N.size > 1 and s < n:
        s, e = _edges_kernel(delta, s, *walk, *pairs, cls_V, seen_K, src_E, cls_E, dst_E, e)
        if s < n:  # full: twice the room, then go on from the state that did not fit
            src_E, cls_E, dst_E = (np.concatenate([a, np.empty_like(a)]) for a in (src_E, cls_E, dst_E))
    return cls_V, src_E[:e].copy(), cls_E[:e].copy(), dst_E[:e].copy()


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
