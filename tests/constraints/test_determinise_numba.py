"""constraints/determinise_numba.py against the numpy steps of constraints/piece_nfa.py it stands in for.

automaton_numba.py's `byte_classes` must number a piece DFA's byte classes exactly as piece_nfa.py's
`_classes_by_first` does (the numbers order the NFA's byte classes, hence its subsets and states), even where
a column-sum hash would collide. `determinise` must give the same table both ways (NUMBA_STATES patched, as in
tests/constraints/test_automaton_numba.py, which also compares the two ways on random NFAs and real schemas)
in the corners: a start that is the dead state, an empty NFA, pieces copied many times, a piece that is
all dead moves.
"""

from __future__ import annotations

import numpy as np
import pytest

from constraints import piece_nfa as pn
from constraints.automaton_numba import byte_classes

NEVER = 10**12  # a NUMBA_STATES no automaton reaches: the numpy reference runs


def random_delta(rng: np.random.Generator, n: int, classes: int) -> np.ndarray:
    """A table of n states (+ dead row n) whose 256 bytes fall into `classes` groups of equal columns."""
    cls = rng.integers(0, classes, size=256)
    tbl = rng.integers(0, n + 1, size=(n, classes))
    delta = np.full((n + 1, 256), n, dtype=np.int32)
    delta[:n] = tbl[:, cls]
    return delta


@pytest.mark.parametrize("n,classes", [(1, 1), (1, 3), (2, 256), (40, 5), (700, 30), (5000, 90)])
def test_byte_classes_number_as_the_reference(n, classes):
    delta = random_delta(np.random.default_rng(n + classes), n, classes)
    labels, reps = byte_classes(delta[:n])
    assert np.array_equal(labels, pn._classes_by_first(delta[:n].T))
    assert np.array_equal(reps, np.sort(np.unique(labels, return_index=True)[1]))


def test_byte_classes_tell_apart_columns_with_equal_sums():
    """(1, 2) and (2, 1) have the same sum: two classes; equal columns: one."""
    delta = np.full((3, 256), 2, dtype=np.int32)
    delta[0, 0], delta[1, 0], delta[0, 1], delta[1, 1] = 1, 2, 2, 1
    assert byte_classes(delta[:2])[0][0] != byte_classes(delta[:2])[0][1]
    delta[:2, 1] = delta[:2, 0]
    assert byte_classes(delta[:2])[0][0] == byte_classes(delta[:2])[0][1]


def both_ways(monkeypatch, build):
    """determinise of the NFA `build()` makes, with the numpy steps and with the compiled ones."""
    out = []
    for threshold in (NEVER, 0):
        monkeypatch.setattr(pn, "NUMBA_STATES", threshold)
        out.append(pn.determinise(*build()))
    return out


def assert_same(a, b):
    assert a[0].shape == b[0].shape and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def chain(pieces, nullable=False, entries=None):
    """An NFA of the pieces in a row (each one's exits linked to the next one's start)."""
    nfa = pn.Nfa()
    frags = [nfa.piece(p) for p in pieces]
    for a, b in zip(frags[:-1], frags[1:]):
        nfa.link(a[1], b[0])
    start = frags[0][0] if entries is None else entries
    return nfa, set(start), set(frags[-1][1]), nullable


def random_dfa(rng: np.random.Generator, n: int, classes: int, mid_final: bool):
    """A DFA that moves one or two states forward on each class or dies (as a leaf reads its text), so
    that chained copies overlap in few states: the subsets stay few."""
    cls = rng.integers(0, classes, size=256)
    tbl = np.minimum(np.arange(n)[:, None] + rng.integers(1, 3, size=(n, classes)), n)
    tbl[rng.random((n, classes)) < 0.5] = n
    tbl[:, 0] = np.arange(1, n + 1)  # class 0 reads to the end
    tbl[n - 1, 0] = n
    delta = np.full((n + 1, 256), n, dtype=np.int32)
    delta[:n] = tbl[:, cls]
    final = np.zeros(n, dtype=bool)
    final[-1] = True
    final[int(rng.integers(0, n))] = mid_final  # the next piece starts while this one goes on
    return delta, final


@pytest.mark.parametrize("seed", range(4))
def test_pieces_copied_many_times(monkeypatch, seed):
    rng = np.random.default_rng(seed)
    dfas = [random_dfa(rng, int(rng.integers(2, 12)), int(rng.integers(1, 6)), i == 0) for i in range(4)]
    pieces = [dfas[int(i)] for i in rng.integers(1, 4, size=10)]
    pieces.insert(int(rng.integers(0, 10)), dfas[0])  # one piece overlaps the next ones: a few subsets
    ref, fast = both_ways(monkeypatch, lambda: chain(pieces, nullable=bool(seed % 2)))
    assert_same(ref, fast)


def test_start_is_the_dead_state(monkeypatch):
    """No entry and the empty word accepted: the start subset is {G}, a DFA of one non-final state."""
    dfa = random_dfa(np.random.default_rng(9), 5, 2, True)
    ref, fast = both_ways(monkeypatch, lambda: chain([dfa, dfa], nullable=True, entries=set()))
    assert_same(ref, fast)
    assert ref[1].tolist() == [False]


def test_a_loop(monkeypatch):
    rng = np.random.default_rng(11)
    dfas = [random_dfa(rng, 8, 3, False) for _ in range(3)]

    def looped():
        nfa, entries, exits, nullable = chain(dfas)
        nfa.link(exits, entries)  # the last piece's exits back to the first's start
        return nfa, entries, exits, nullable

    ref, fast = both_ways(monkeypatch, looped)
    assert_same(ref, fast)


def test_a_piece_of_dead_moves_only(monkeypatch):
    dead = (np.full((3, 256), 2, dtype=np.int32), np.array([False, True]))
    dfa = random_dfa(np.random.default_rng(10), 6, 3, True)
    ref, fast = both_ways(monkeypatch, lambda: chain([dfa, dead, dfa]))
    assert_same(ref, fast)


@pytest.mark.parametrize("seed", range(3))
def test_piece_cols_as_the_reference(seed):
    """The NFA's class columns (piece_nfa.py `piece_cols`) filled by the kernel: the same array, for pieces
    copied several times, int32 and int64 tables, a piece of dead moves only, a one-state piece."""
    from constraints.determinise_numba import piece_cols_compiled

    rng = np.random.default_rng(seed)
    dfas = [random_dfa(rng, int(rng.integers(1, 30)), int(rng.integers(1, 8)), bool(i % 2)) for i in range(5)]
    dfas[1] = (dfas[1][0].astype(np.int64), dfas[1][1])
    dfas.append((np.full((3, 256), 2, dtype=np.int32), np.array([False, True])))
    nfa = pn.Nfa()
    for i in rng.integers(0, len(dfas), size=25):
        nfa.piece(dfas[int(i)])
    first = np.sort(rng.choice(256, size=int(rng.integers(1, 40)), replace=False))
    ref, fast = pn.piece_cols(nfa, first), piece_cols_compiled(nfa, first)
    assert ref.dtype == fast.dtype and np.array_equal(ref, fast)
    assert (ref[-1] == nfa.size).all() and (ref < nfa.size).any()  # dead row; live moves shifted in range
