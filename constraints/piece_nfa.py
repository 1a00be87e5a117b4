"""An NFA whose pieces are copies of byte DFAs joined by epsilon links, and its subset construction.

Legend: G states of the NFA (state G is the dead state), C byte classes (bytes whose columns agree in every
piece), K subsets explored (the DFA's states beyond the single NFA states).

composed_dfa.py builds the NFA (Glushkov style: the exits of one piece linked to the entries of the next) and
hands it to `determinise`. A piece is not copied when added: its DFA's class columns are read once, when
the NFA is determinised. A state that is no link's source is a subset of its own, its row its piece's row
shifted; only the subsets at the junctions are explored. `_explore` does it a breadth-first level at a time
in numpy and Python (the reference); from NUMBA_STATES NFA states on, automaton_numba.py's
`explore_subsets` does the same in compiled code and numbers the subsets in the same order, its
`byte_classes` numbers the pieces' byte classes, and determinise_numba.py writes the reachable table, so
both ways give the same table (tests/constraints/test_automaton_numba.py and test_determinise_numba.py
compare them).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

MAX_NFA_STATES = 1_000_000  # states of one part's NFA (~1 GB of tables): past this the regex is refused
NUMBA_STATES = 4_000  # from this many NFA / DFA states on, the compiled kernels (automaton_numba.py) run
Dfa = tuple[np.ndarray, np.ndarray]  # (delta [n+1, 256] int32 with dead row n, final bool [n]); 0 = start
# the same by byte class: (table [n+1, C] int32 with dead row n, class of each byte [256], final bool [n])
ClassDfa = tuple[np.ndarray, np.ndarray, np.ndarray]
# a subset construction: (nfa, entries, exits, nullable) -> its ClassDfa (`determinise_classes`, kernels)
Determinise = Callable[["Nfa", set[int], set[int], bool], ClassDfa]


class Nfa:
    """Pieces (DFA copies) in one global numbering, with epsilon links between them."""

    def __init__(self, labels: dict[int, tuple[np.ndarray, np.ndarray]] | None = None):
        self.pieces: list[tuple[np.ndarray, int, int]] = []  # (delta, first state, states) of each copy
        # each distinct piece DFA's byte classes by id, found once: composed_dfa.py hands every NFA of one
        # build the same dict. It holds the table with them, so that no other table takes that id meanwhile
        self.labels = {} if labels is None else labels
        self.size = 0
        self.links: dict[int, set[int]] = {}
        # each distinct piece DFA, by id (its table held here, so that no other one takes its id)
        self.kinds: dict[int, tuple[np.ndarray, int]] = {}

    def piece(self, dfa: Dfa) -> tuple[set[int], set[int], bool]:
        """Add a copy of `dfa`: (entries, exits, nullable) of the fragment it forms."""
        delta, final = dfa
        n, off = final.size, self.size
        if off + n > MAX_NFA_STATES:
            raise ValueError(f"the constraint's automaton is too large to compile (over {MAX_NFA_STATES})")
        # the copy is not made here: `determinise` reads the class columns only, once per distinct DFA
        self.pieces.append((delta, off, n))
        self.size += n
        self.kinds.setdefault(id(delta), (delta, n))
        exits = set((np.nonzero(final)[0] + off).tolist())
        return {off}, exits, False  # a nullable piece passes through its final start state

    def link(self, exits: set[int], entries: set[int]) -> None:
        for x in exits:
            self.links.setdefault(x, set()).update(entries)


def determinise(nfa: Nfa, entries: set[int], exits: set[int], nullable: bool) -> Dfa:
    """The DFA of the NFA from `entries` (the empty word accepted when `nullable`), `exits` final: the table
    of `determinise_classes`, each byte's column that of its class."""
    cols, byte_cls, final = determinise_classes(nfa, entries, exits, nullable)
    return np.take(cols, byte_cls, axis=1), final


def determinise_classes(nfa: Nfa, entries: set[int], exits: set[int], nullable: bool) -> ClassDfa:
    """The DFA of the NFA from `entries` (the empty word accepted when `nullable`), `exits` final, by byte
    class: (table [m+1, C] int32 with dead row m, class of each byte [256], final [m]); its states
    are those reachable from the start (the start first, the others in the order numbered). The rule for a
    lone NFA: `determinise_compiled` from NUMBA_STATES NFA states on, else `determinise_reference` (the
    same table). A composed build takes `determinise_compiled` at every size (byte_automaton.py's compiled
    `Steps`: its leaves loaded numba already)."""
    kernel = determinise_compiled if nfa.size >= NUMBA_STATES else determinise_reference
    return kernel(nfa, entries, exits, nullable)


class _Subsets:
    """What both subset constructions start from: the NFA's class columns, its finals, the closures of its
    linked states and the start subset, numbered (the initial subsets) in the order both explore from.
    `labels` numbers one piece's byte classes by first column (`_classes_by_first` or its compiled twin),
    `fill` writes the class columns of the pieces (`piece_cols` or its compiled twin)."""

    def __init__(
        self, nfa: Nfa, entries: set[int], exits: set[int], nullable: bool, labels: Callable, fill: Callable
    ):
        G = self.G = nfa.size
        self.nfa = nfa
        # byte classes: bytes whose columns agree in every piece (a copy's columns agree where its DFA's do)
        per_piece = []
        for key, (delta, n) in nfa.kinds.items():
            held = nfa.labels.get(key)
            if held is None or held[0] is not delta:
                held = nfa.labels[key] = delta, labels(delta[:n])
            per_piece.append(held[1])
        first, self.byte_cls = same_rows(np.stack(per_piece or [np.zeros(256, np.int64)], axis=1))
        self.n_cls = first.size
        self.cols = fill(nfa, first)  # [G+1, C]: `piece_cols`
        self.final = np.zeros(G + 1, dtype=bool)
        self.final[list(exits)] = True
        self.linked = np.zeros(G + 1, dtype=bool)
        self.linked[list(nfa.links)] = True
        self.ids: dict[frozenset, int] = {}
        self.subsets: list[frozenset] = []
        self.of_state = np.arange(G + 1, dtype=np.int64)  # the subset each single state's closure is
        for s in np.nonzero(self.linked)[0].tolist():
            self.of_state[s] = self.sid(self.closure([s]))
        # G (the dead row) stands in the start subset for "the empty word is matched"
        self.start = self.sid(self.closure(entries) | ({G} if nullable else frozenset()))

    def closure(self, states) -> frozenset:
        linked, links = self.linked, self.nfa.links
        seen, todo = set(states), [s for s in states if linked[s]]
        while todo:
            for t in links[todo.pop()]:
                if t not in seen:
                    seen.add(t)
                    if linked[t]:
                        todo.append(t)
        return frozenset(seen)

    def sid(self, fs: frozenset) -> int:
        if len(fs) == 1:
            (x,) = fs
            if not self.linked[x]:
                return x
        if fs not in self.ids:
            self.ids[fs] = self.G + 1 + len(self.subsets)
            self.subsets.append(fs)
        return self.ids[fs]


def piece_cols(nfa: Nfa, first: np.ndarray) -> np.ndarray:
    """int32 [G+1, C] (G < MAX_NFA_STATES): each piece's class columns only (the bytes `first`, one per
    class: a quarter or less of its 256), shifted to its first state, the dead state G for the piece's dead
    row; row G dead."""
    G = nfa.size
    cols = np.empty((G + 1, first.size), dtype=np.int32)
    cols[G] = G
    shape: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # per distinct piece: class columns, dead cells
    for delta, off, n in nfa.pieces:
        if id(delta) not in shape:
            sub = delta[:n, first].astype(np.int32)
            shape[id(delta)] = sub, sub >= n
        sub, dead = shape[id(delta)]
        np.add(sub, off, out=cols[off : off + n])
        np.copyto(cols[off : off + n], G, where=dead)
    return cols


def determinise_compiled(nfa: Nfa, entries: set[int], exits: set[int], nullable: bool) -> ClassDfa:
    """`determinise_classes` by the compiled twins (the pieces' byte classes, the exploration, the reachable
    table: automaton_numba.py, determinise_numba.py): the same subsets in the same order, the same table."""
    from constraints.automaton_numba import byte_classes, explore_subsets
    from constraints.determinise_numba import piece_cols_compiled, reachable_table

    s = _Subsets(nfa, entries, exits, nullable, lambda delta: byte_classes(delta)[0], piece_cols_compiled)
    G = s.G
    initial = [np.asarray(sorted(fs), dtype=np.int64) for fs in s.subsets]
    # a linked state's closure is one of the initial subsets (of_state numbers it): not recomputed
    closures = [initial[s.of_state[x] - G - 1] for x in np.nonzero(s.linked)[0].tolist()]
    ptr, members, sub_rows = explore_subsets(s.cols, s.of_state, s.linked, closures, initial)
    fin = s.final.copy()
    fin[G] = True  # G in a subset: the empty word is matched there
    sub_final = np.logical_or.reduceat(fin[members], ptr[:-1]) if ptr.size > 1 else np.zeros(0, bool)
    classes = np.arange(s.n_cls)  # the table by class: each class its own column
    table, fin = reachable_table(s.cols, s.of_state, sub_rows, s.final, sub_final, s.start, classes)
    return table, s.byte_cls, fin


def determinise_reference(nfa: Nfa, entries: set[int], exits: set[int], nullable: bool) -> ClassDfa:
    """`determinise_classes` in numpy and Python: a state without links is a subset of its own (its row is
    its piece's row, shifted); the other subsets are explored by `_explore`."""
    s = _Subsets(nfa, entries, exits, nullable, lambda delta: _classes_by_first(delta.T), piece_cols)
    G, start = s.G, s.start
    all_rows, all_final = _explore(s.cols, s.final, s.of_state, s.linked, s.closure, s.subsets, s.sid, G)
    all_final[G] = False
    # keep the states reachable from the start, start first
    reach = np.zeros(all_rows.shape[0], dtype=bool)
    reach[start] = reach[G] = True
    frontier = np.asarray([start])
    seen_at = np.full(all_rows.shape[0], -1, dtype=np.int64)
    while frontier.size:
        nxt = all_rows[frontier].reshape(-1)
        nxt = nxt[~reach[nxt]]
        seen_at[nxt] = np.arange(nxt.size)  # one survivor per state: the last write wins, no sort needed
        frontier = nxt[seen_at[nxt] == np.arange(nxt.size)]
        reach[frontier] = True
    reach[G] = False
    keep = np.nonzero(reach)[0]
    keep = np.concatenate([[start], keep[keep != start]])
    m = keep.size
    renum = np.full(all_rows.shape[0], m, dtype=np.int64)
    renum[keep] = np.arange(m)
    out = np.full((m + 1, s.n_cls), m, dtype=np.int32)
    out[:m] = renum.astype(np.int32)[all_rows[keep]]
    return out, s.byte_cls, all_final[keep]


def _explore(cols, final, of_state, linked, closure, subsets: list, sid, G: int) -> tuple[np.ndarray, ...]:
    """(rows [total, C], final [total]) of the single states then of every subset reachable from `subsets`,
    explored a breadth-first level at a time: successor sets found with numpy, the distinct new ones closed
    over the links in Python and numbered in the order first seen (automaton_numba.py's order)."""
    rows = [of_state[cols]]  # [G+1, C]: rows of the single-state subsets
    finals = [final]
    done = 0
    while done < len(subsets):
        batch = subsets[done:]
        done = len(subsets)
        width = max(len(fs) for fs in batch)
        members = np.full((len(batch), width), G, dtype=np.int64)
        for r, fs in enumerate(batch):
            members[r, : len(fs)] = sorted(fs)
        finals.append(final[members].any(axis=1) | np.asarray([G in fs for fs in batch]))
        succ = np.sort(cols[members].transpose(0, 2, 1), axis=2)  # [B, C, width]: successor states
        succ[:, :, 1:][succ[:, :, 1:] == succ[:, :, :-1]] = G  # duplicates -> dead, then dead last
        succ = np.sort(succ, axis=2).reshape(-1, width)
        first_row, inv = same_rows(succ)
        distinct = succ[first_row].tolist()
        to = np.empty(first_row.size, dtype=np.int64)
        for r in np.argsort(first_row, kind="stable").tolist():  # first seen first: new subsets in that order
            targets = [t for t in distinct[r] if t != G]
            if not targets:
                to[r] = G
            elif len(targets) == 1:
                to[r] = of_state[targets[0]]
            else:
                to[r] = sid(frozenset().union(*(closure([t]) if linked[t] else (t,) for t in targets)))
        rows.append(to[inv].reshape(len(batch), -1))
    return np.concatenate(rows), np.concatenate(finals)


def same_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first row of each group of identical rows of `a`, group of each row): a 64-bit hash groups them, an
    exact comparison confirms (a collision falls back to sorting the rows)."""
    w = np.random.default_rng(0xC0DE).integers(1, 2**63, size=a.shape[1], dtype=np.uint64) | np.uint64(1)
    with np.errstate(over="ignore"):
        h = (a.astype(np.uint64) * w).sum(axis=1, dtype=np.uint64)
    _, first, inv = np.unique(h, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    rep = first[inv]
    # each row against its group's first, read in memory order (a piece's table, transposed: its columns)
    if a.flags.f_contiguous:
        same = (a.T == np.take(a.T, rep, axis=1)).all()
    else:
        same = (a == a[rep]).all()
    if not same:
        _, first, inv = np.unique(a, axis=0, return_index=True, return_inverse=True)
        inv = inv.reshape(-1)
    return first, inv


def _classes_by_first(a: np.ndarray) -> np.ndarray:
    """Group of each row of `a`, groups of identical rows numbered by their first row (the numbering of
    automaton_numba.py's `byte_classes`, its compiled twin for a piece's columns)."""
    first, inv = same_rows(a)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first)] = np.arange(first.size)
    return rank[inv]
