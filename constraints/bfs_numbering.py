"""The breadth-first numbering of a byte automaton: a state numbering that depends on its language only.

Legend: n states (0 is the start, row n of delta is the dead state).

A composed build (composed_dfa.py) numbers its minimal automaton by first member of the last subset
construction, so the numbering follows how the regex was cut into parts (LEAF_CHARS, which groups are
leaves): the same language cut otherwise gave another table, and the token automaton (dfa.py), its cache
key's arrays included, another numbering. A minimal automaton is unique up to renaming its states, and the
order a first-in first-out search from the start meets them (successors by byte, ascending) is a property
of the automaton, not of its names; so renumbered in that order, two minimal automata of one language are the
same table, whichever way they were built. That leaves the composed build free to choose its parts for
speed (composed_dfa.py `LEAF_CHARS`).

`bfs_renumbered` (the search a level at a time in numpy, then the table gathered) is the reference;
automaton_numba.py's `bfs_renumbered` the compiled twin, one search and one pass over the table
(tests/constraints/test_automaton_numba.py compares them).
"""

from __future__ import annotations

import numpy as np


def bfs_order(delta: np.ndarray) -> np.ndarray:
    """int64 [n]: the states of `delta` [n+1, B] (row n dead) in the order a first-in first-out search from
    state 0 meets them, successors by byte ascending; states it never meets follow, ascending."""
    n = delta.shape[0] - 1
    seen = np.zeros(n + 1, dtype=bool)
    seen[n] = True  # the dead state is never numbered
    seen[0] = True
    levels = [np.zeros(1, dtype=np.int64)]
    frontier = levels[0]
    while frontier.size:
        # the successors in the order the search reads them (state of the level, then byte); a state's
        # first occurrence is where the search meets it
        nxt = delta[frontier].reshape(-1)
        nxt = nxt[~seen[nxt]]
        _, first = np.unique(nxt, return_index=True)
        frontier = nxt[np.sort(first)].astype(np.int64)
        seen[frontier] = True
        levels.append(frontier)
    levels.append(np.nonzero(~seen[:n])[0])
    return np.concatenate(levels)


def bfs_renumbered(
    delta: np.ndarray, final: np.ndarray, live: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The states `live` [n] of (delta [n+1, B], final [n]) (state 0 among them), the others read as the
    dead state, numbered in `bfs_order` (live states it never meets after, ascending): (delta [m+1, B]
    int32 with dead row m, final [m]). The reference of automaton_numba.py's `bfs_renumbered`."""
    n = final.size
    dead = np.append(~live, True)
    order = bfs_order(np.where(dead[delta], n, delta))
    order = order[live[order]]
    m = order.size
    new = np.full(n + 1, m, dtype=np.int32)
    new[order] = np.arange(m, dtype=np.int32)
    return np.take(new, delta[np.append(order, n)]), final[order]
