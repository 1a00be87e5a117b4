"""The reference coarsest partition of a byte automaton: Moore's refinement, hashed, checked exactly.

Legend: n states (row n of the class columns is the dead state), C byte classes.

byte_automaton.py's `minimise` takes its blocks from here with the reference steps (small automata: no
numba import); partition_numba.py's Hopcroft algorithm is the compiled twin and finds the same partition
(the coarsest one refining {final, non-final, dead} is unique; tests/constraints/test_automaton_numba.py
compares them). The hashed refinement summarises each state's signature (its block, the block of each
successor) in a 64-bit sum; the partition it ends with is checked exactly to be a congruence that respects
finality, and a failed check (odds ~2^-64) redoes it on exact row sorts.
"""

from __future__ import annotations

import numpy as np

from constraints.csr import csr_ranges


def moore_blocks(cols: np.ndarray, final: np.ndarray) -> np.ndarray:
    """The reference partition of the class columns `cols` [n+1, C]: hashed Moore refinement, checked exactly
    (exact Moore if the check fails)."""
    rng = np.random.default_rng(0x5EED)
    w = rng.integers(1, 2**63, size=cols.shape[1] + 1, dtype=np.uint64) | np.uint64(1)
    block = moore(cols, final, w)
    if not is_congruence(cols, final, block):
        block = moore_exact(cols, final)
    return block


def is_congruence(cols: np.ndarray, final: np.ndarray, block: np.ndarray) -> bool:
    """Whether the states of each block agree on finality and on the block of every successor (then merging
    them keeps the language: the quotient automaton reads the same words to the same blocks)."""
    n = final.size
    fin = np.append(final, False)
    rep = np.full(int(block.max()) + 1, n + 1, dtype=np.int64)
    np.minimum.at(rep, block, np.arange(n + 1))
    r = rep[block]
    dead_alone = (block[n] != block[:n]).all()
    return bool((block[cols] == block[cols[r]]).all() and (fin == fin[r]).all() and dead_alone)


def moore(cols: np.ndarray, final: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Block id per state (+ the dead row) after hashed Moore refinement; ids are not dense.

    Ids are stable: when a block splits, the part holding its first state keeps the id and the others get
    new ones, so each round updates only the hashes of the predecessors of states that changed id.
    """
    n, C = final.size, cols.shape[1]
    block = np.append(final.astype(np.int64), 2)  # the dead state alone in block 2
    next_id = 3
    # edges into live states, grouped by target: (source, byte class)
    src, cls = np.nonzero(cols[:n] < n)
    tgt = cols[src, cls]
    order = np.argsort(tgt, kind="stable")
    src, cls = src[order], cls[order]
    start = np.searchsorted(tgt[order], np.arange(n + 2))
    with np.errstate(over="ignore"):
        h = (block[cols].astype(np.uint64) * w[:C]).sum(axis=1, dtype=np.uint64)
        for _ in range(n + 2):
            key = h + block.astype(np.uint64) * w[C]
            _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
            g_block = block[first]
            o = np.lexsort((first, g_block))  # groups by old block, first member ascending
            keeps = np.ones(o.size, dtype=bool)
            keeps[1:] = g_block[o[1:]] != g_block[o[:-1]]
            if keeps.all():
                return block
            new_id = np.empty(o.size, dtype=np.int64)
            new_id[o[keeps]] = g_block[o[keeps]]
            n_new = int((~keeps).sum())
            new_id[o[~keeps]] = np.arange(next_id, next_id + n_new)
            next_id += n_new
            nb = new_id[inverse.reshape(-1)]
            moved = np.nonzero(nb[:n] != block[:n])[0]
            lo, hi = start[moved], start[moved + 1]
            e = csr_ranges(lo, hi)
            diff = np.repeat((nb[moved] - block[moved]).astype(np.uint64), hi - lo)
            np.add.at(h, src[e], w[cls[e]] * diff)
            block = nb
    return block


def moore_exact(cols: np.ndarray, final: np.ndarray) -> np.ndarray:
    """Block id per state by Moore's refinement on exact row sorts (slow; the fallback of `moore`)."""
    block = np.append(final.astype(np.int64), 2)
    n_blocks = np.unique(block).size
    while True:
        sig = np.concatenate([block[:, None], block[cols]], axis=1)
        _, block = np.unique(sig, axis=0, return_inverse=True)
        block = block.reshape(-1)
        if int(block.max()) + 1 == n_blocks:
            return block
        n_blocks = int(block.max()) + 1
