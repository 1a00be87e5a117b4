"""Compiled (numba) twin of the numpy table step after piece_nfa.py's subset exploration, for large NFAs.

Legend: n states of a piece DFA, G states of the composed NFA (+1: the dead state G), C byte classes, K
subsets explored, m states of the resulting DFA.

piece_nfa.py's `determinise` is the reference: from NUMBA_STATES NFA states on it runs these in place of
its numpy steps (and automaton_numba.py's `explore_subsets` in place of `_explore`), and
tests/constraints/test_automaton_numba.py and test_determinise_numba.py compare the two ways table for
table. Past a few thousand states the numpy steps spent their time making 256-wide temporaries:
- `reachable_table`: the DFA states reachable from the start, the start first, and their 256-byte table,
  filled row by row from the class columns: no [G+1+K, C] table of every state's successors, no
  level-by-level search in numpy, no filled [m+1, 256] table overwritten by a gather along its rows.
- `piece_cols_compiled`: the NFA's class columns (piece_nfa.py `piece_cols`), each cell written once
  from its piece's table: no gathered, cast and masked copies per piece (0.10 s of o38670's build).
(The pieces' byte classes come from automaton_numba.py's `byte_classes`, the minimiser's kernel.)
"""

from __future__ import annotations

import numpy as np

from constraints.automaton_numba import _jit


@_jit
def _cols_kernel(delta, first_C, offs, n, G, cols):  # pragma: no cover - compiled
    C = first_C.size
    for p in range(offs.size):
        off = offs[p]
        for s in range(n):
            for c in range(C):
                t = delta[s, first_C[c]]
                cols[off + s, c] = t + off if t < n else G


def piece_cols_compiled(nfa, first: np.ndarray) -> np.ndarray:
    """piece_nfa.py's `piece_cols`, the same array: one kernel call per distinct piece, for all its copies."""
    G = nfa.size
    cols = np.empty((G + 1, first.size), dtype=np.int32)
    cols[G] = G
    offs: dict[int, list[int]] = {}
    for delta, off, _ in nfa.pieces:
        offs.setdefault(id(delta), []).append(off)
    first = np.ascontiguousarray(first, dtype=np.int64)
    for key, (delta, n) in nfa.kinds.items():
        table = np.ascontiguousarray(delta, dtype=np.int32)  # (one signature: pieces are int32 tables)
        _cols_kernel(table, first, np.asarray(offs[key], dtype=np.int64), n, G, cols)
    return cols


@_jit
def _reach_kernel(cols, of_state, sub_rows, start, keep, renum):  # pragma: no cover - compiled
    G = cols.shape[0] - 1
    C = cols.shape[1]
    T = renum.size
    reach = np.zeros(T, dtype=np.bool_)
    reach[start] = True
    reach[G] = True  # the dead state is not followed (nor kept, unless it is the start)
    queue = keep  # breadth first, in the space `keep` takes after
    queue[0] = start
    head, tail = 0, 1
    while head < tail:
        s = queue[head]
        head += 1
        for c in range(C):
            t = of_state[cols[s, c]] if s <= G else sub_rows[s - G - 1, c]
            if not reach[t]:
                reach[t] = True
                queue[tail] = t
                tail += 1
    reach[G] = False
    reach[start] = False
    keep[0] = start
    m = 1
    renum[:] = -1
    renum[start] = 0
    for s in range(T):  # the start first, the others ascending
        if reach[s]:
            keep[m] = s
            renum[s] = m
            m += 1
    for s in range(T):
        if renum[s] < 0:
            renum[s] = m
    return m


@_jit
def _table_kernel(cols, of_state, sub_rows, accept, keep, renum, byte_cls, out, fin):  # pragma: no cover
    G = cols.shape[0] - 1
    C = cols.shape[1]
    row = np.empty(C, dtype=np.int32)
    m = fin.size
    for i in range(m):
        s = keep[i]
        for c in range(C):
            row[c] = renum[of_state[cols[s, c]] if s <= G else sub_rows[s - G - 1, c]]
        for b in range(byte_cls.size):
            out[i, b] = row[byte_cls[b]]
        fin[i] = accept[s]
    out[m] = m


def reachable_table(
    cols: np.ndarray,
    of_state: np.ndarray,
    sub_rows: np.ndarray,
    final: np.ndarray,
    sub_final: np.ndarray,
    start: int,
    byte_cls: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(delta [m+1, B] int32 with dead row m, final [m]) of the states reachable from `start`: the start
    first, the others ascending. State s <= G is the single NFA state s (successors of_state[cols[s]]),
    G + 1 + k the explored subset k (successors sub_rows[k]); final [G+1] and sub_final [K] say which
    accept; byte_cls [B] is each column's class (each byte's: a 256-wide table; piece_nfa.py's
    `determinise_compiled` passes 0..C-1, the table by class). The arrays are made here, in numpy, not in
    the kernels: numpy asks for huge pages for large ones, numba's allocator does not (4 times slower to
    fill)."""
    cols = np.ascontiguousarray(cols, dtype=np.int32)  # piece_nfa.py `piece_cols`: half the pages to fill
    of_state = np.ascontiguousarray(of_state, dtype=np.int64)
    sub_rows = np.ascontiguousarray(sub_rows, dtype=np.int64)
    T = cols.shape[0] + sub_rows.shape[0]
    keep = np.empty(T, dtype=np.int64)
    renum = np.empty(T, dtype=np.int32)
    m = _reach_kernel(cols, of_state, sub_rows, int(start), keep, renum)
    out = np.empty((m + 1, byte_cls.size), dtype=np.int32)
    fin = np.empty(m, dtype=np.bool_)
    accept = np.concatenate([final, sub_final]).astype(np.bool_)
    accept[cols.shape[0] - 1] = False  # G: the dead state (the start when only the empty word was)
    byte_cls = np.ascontiguousarray(byte_cls, dtype=np.int64)
    _table_kernel(cols, of_state, sub_rows, accept, keep[:m], renum, byte_cls, out, fin)
    return out, fin
