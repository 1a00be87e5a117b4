"""The concatenated ranges of a CSR layout: the edges of a frontier's states, in one numpy call.

Shared by the level-by-level searches in numpy (byte_automaton.py `_coreachable`, moore.py's refinement,
dfa.py `_bfs`): each reads the edges of a whole frontier at once from edges sorted by state.
"""

from __future__ import annotations

import numpy as np


def csr_ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Concatenation of arange(lo[i], hi[i]) for every i, without a Python loop."""
    lens = hi - lo
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offs = np.repeat(lo - np.cumsum(lens) + lens, lens)
    return offs + np.arange(total)
