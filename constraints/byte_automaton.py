"""regex -> its minimal byte automaton (delta table + final flags), the input of the token automaton (dfa.py).

Legend: n byte states (0 is the start, row n of delta is the dead state), C byte classes (bytes whose columns
of delta are identical).

outlines-core builds the regex's byte-level automaton (an Index over the 256 one-byte tokens, the regex
between two sentinel bytes: see `_outlines_dfa`). That automaton is deterministic but not minimal: the regex
is a tree, so a subexpression written twice (an optional field that follows several alternatives, the same
$ref under two keys) becomes two copies of the same states. We minimise it exactly (Moore's partition
refinement: states stay together while they agree on finality and on the block of every successor), which
merges every pair of states with the same future. The language is unchanged; the token automaton's build,
linear in byte states, then walks only the distinct futures (a Kubernetes schema: 14,010 byte states ->
1,409). A regex over COMPOSE_CHARS, or one outlines-core refuses (its parser's nesting limit), is built part
by part instead (composed_dfa.py): the copies are then never built, only their minimal automaton copied.

This module imports only numpy, outlines-core and composed_dfa.py (and numba, past NUMBA_STATES): the compile
worker (dfa.py run as a script) loads it without the package's __init__ (which loads torch).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain

import numpy as np
from outlines_core import Index, Vocabulary

from constraints import bfs_numbering
from constraints.composed_dfa import Opaque, compose
from constraints.csr import csr_ranges
from constraints.moore import moore_blocks
from constraints.piece_nfa import NUMBA_STATES, Determinise, determinise_classes, determinise_compiled

COMPOSE_CHARS = 10_000  # a longer regex is built part by part (composed_dfa.py): 2-9x faster past 100k
_BYTE_EOS = 256  # the pseudo-EOS id of the byte-level index
_BYTE_VOCAB = Vocabulary(_BYTE_EOS, {bytes([b]): [b] for b in range(256)})


@dataclass(frozen=True)
class Steps:
    """How `_outlines_dfa` reads outlines-core's transitions, `_trim` finds the co-reachable states,
    `minimise` the byte classes, the coarsest partition and its quotient table, `table` turns a whole
    Index into its table in one pass, and a composed build determinises its parts: the references (dicts
    and numpy: no import, low cost per call on a small automaton; no one-pass table; piece_nfa.py's size
    rule) or the compiled twins of index_numba.py, automaton_numba.py, partition_numba.py and piece_nfa.py's
    `determinise_compiled` (the same results; ~0.3 s to import numba once, then much faster per state and
    per call)."""

    edges: Callable[[Index], tuple[np.ndarray, ...]]  # outlines-core's Index -> (src, token, dst) [E]
    live: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (delta, final) -> bool [n]
    classes: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # delta -> (class [256], first bytes [C])
    blocks: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (cols [n+1, C], final) -> block id [n+1]
    # (cols, class [256], final, block) -> the quotient (delta [m+1, 256], final [m]), blocks by first member
    quotient: Callable[..., tuple[np.ndarray, np.ndarray]]
    # (Index, trim) -> `_trim(*_index_dfa(index))` (`_index_dfa(index)` if not trim), None: not read here
    table: Callable[[Index, bool], tuple[np.ndarray, np.ndarray] | None]
    # (nfa, entries, exits, nullable) -> ClassDfa: a composed build's subset construction of every part
    # (piece_nfa.py: its size rule, or its compiled kernel at every size)
    determinise: Determinise
    # (delta, final, live) -> the live states numbered breadth-first (bfs_numbering.py), the others dead
    renumber: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def compiled_steps() -> Steps:
    from constraints.automaton_numba import bfs_renumbered, byte_classes, coreachable
    from constraints.partition_numba import quotient

    return Steps(
        _decoded_edges, coreachable, byte_classes, _hopcroft_blocks, quotient, _decoded_table,
        determinise_compiled, bfs_renumbered,
    )


def compiled_at(n: int) -> bool:
    """The one size rule for a lone automaton of n states, read where a strategy is chosen (`steps_for`,
    dfa.py's `token_steps_for`): the compiled kernels from NUMBA_STATES states on (below it numba's ~0.3 s
    import costs more than it saves)."""
    return n >= NUMBA_STATES


def steps_for(n: int) -> Steps:
    """The steps for a lone automaton of n states: compiled where `compiled_at` says so."""
    return compiled_steps() if compiled_at(n) else REFERENCE_STEPS


def loaded_steps() -> Steps:
    """The rule for reading a whole Index, whose size is unknown before it is read: compiled where numba is
    loaded already (the compiled twin then costs no import: what `steps_for` saves), else the references."""
    return compiled_steps() if "numba" in sys.modules else REFERENCE_STEPS


def leaf_dfa(regex: str, steps: Steps | None = None) -> tuple[np.ndarray, np.ndarray]:
    """outlines-core's automaton of a small regex, co-reachable states only (not minimised: small already).
    With the compiled steps, index_numba.py's `leaf_table` (the same table in one compiled pass)."""
    if steps is not None:
        dfa = steps.table(_index(regex), True)
        if dfa is not None:
            return dfa
    return _trim(*_outlines_dfa(regex, (steps or REFERENCE_STEPS).edges), steps)


def byte_dfa(regex: str) -> tuple[np.ndarray, np.ndarray]:
    """The regex's minimal byte automaton as (delta [n+1, 256] int32 with dead row n, final bool [n]).

    The regex is compiled with an end sentinel byte (\\x00) appended: the engine's alternation is
    leftmost-first, so without it a prefix that already matches (e.g. "tr" in `tr(ue)?`) would cut off its
    longer continuations. A state is final when the sentinel would complete the match there. Only states
    that can still reach a final state are kept (co-reachable), so every live path completes.
    """
    if len(regex) > COMPOSE_CHARS:
        try:
            return _composed(regex)
        except Opaque:
            pass  # flags or anchors: outlines-core reads it whole
    try:
        index = _index(regex)
    except ValueError as err:  # outlines-core's nesting limit (e.g. ~80 optional fields in a row): split it
        try:
            return _composed(regex)
        except Opaque:
            raise err from None
    dfa = loaded_steps().table(index, False)  # the table `_index_dfa` makes, compiled where numba is loaded
    if dfa is None:
        dfa = _index_dfa(index)
    return _trim(*minimise(*dfa))  # after minimising: the trim then walks the small automaton


def _composed(regex: str) -> tuple[np.ndarray, np.ndarray]:
    """composed_dfa.py's build, every part with the compiled steps whatever its size: a composed regex is a
    large one, and its hundreds of small leaves and parts spent more in numpy's per-call overhead than in
    their states (byte_dfa of 20 slow JSONSchemaBench schemas, min of 3: 18.1 s -> 14.9 s); their subset
    constructions too (piece_nfa.py `determinise_compiled`).

    The whole regex's automaton stays in byte classes until the end (`_by_first_byte`): minimised, trimmed
    and numbered on its C class columns, then spread over the 256 bytes once (o38670: C = 78; three
    256-wide passes over its 83k states cost ~0.1 s)."""
    steps = compiled_steps()
    leaf, minimise = (lambda rx: leaf_dfa(rx, steps)), (lambda d: minimise_classes(*d, steps))
    cols, cls, final = compose(regex, leaf, minimise, steps.determinise, lambda d: _by_first_byte(*d, steps))
    # trimmed and numbered breadth-first in one pass: the table then depends on the language only, not on
    # how it was cut into parts
    cols, final = steps.renumber(cols, final, _live(cols, final, steps))
    return np.take(cols, cls, axis=1), final


def _by_first_byte(
    cols: np.ndarray, cls: np.ndarray, final: np.ndarray, steps: Steps
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The minimal automaton of piece_nfa.py's ClassDfa (cols [n+1, C], class of each byte [256], final) by
    class: (cols [m+1, C] int32, class of each byte, final [m]), the columns in the order of their classes'
    first bytes, so that a search reading a state's columns in order reads its successors by byte,
    ascending: bfs_numbering.py's order, as on the 256-wide table."""
    first = np.full(cols.shape[1], 256, dtype=np.int64)
    np.minimum.at(first, cls, np.arange(256))
    order = np.argsort(first, kind="stable")
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    # the quotient writes its column j from column order[j]: the permutation costs no copy of the table
    qcols, qfinal = steps.quotient(cols, order, final, steps.blocks(cols, final))
    return qcols, rank[cls], qfinal


def _outlines_dfa(regex: str, edges: Callable | None = None) -> tuple[np.ndarray, np.ndarray]:
    """outlines-core's automaton of \\x01 `regex` \\x00 as (delta [n+1, 256], final [n]), sentinels removed.

    The leading \\x01 is for speed only: outlines-core's engine also determinises the unanchored search
    (a match starting at any offset), whose states track every partial match at once: `[0-9]{0,15}` alone
    made 0.5 s of it and a string-or-number 2.5 s, for a 34-state automaton. With a byte that JSON text never
    holds in front, a match can only start there and that search stays as small as the automaton itself.
    We start after it; a regex that does admit \\x01 somewhere is only slower, never read differently.
    """
    return _index_dfa(_index(regex), edges)


def _index(regex: str) -> Index:
    """outlines-core's Index of \\x01 `regex` \\x00 over the 256 one-byte tokens (`_outlines_dfa`)."""
    return Index(f"\\x01(?:{regex})\\x00", _BYTE_VOCAB)


def _index_dfa(index: Index, edges: Callable | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`_outlines_dfa` of the regex whose Index this is; `edges` reads its transitions."""
    src, byte, dst = (edges or _index_edges)(index)
    pre = index.get_initial_state()
    init = int(dst[(src == pre) & (byte == 1)][0])  # the start: after \x01
    # dense numbering, the start first, then the engine's ids ascending: a table over its ids (no sort)
    top = int(max(src.max(initial=0), dst.max(initial=0), init)) + 1
    seen = np.zeros(top, dtype=bool)
    seen[src] = True
    seen[dst] = True
    seen[init] = False
    ids = np.nonzero(seen)[0]
    n = ids.size + 1
    num = np.zeros(top, dtype=np.int64)
    num[ids] = np.arange(1, n)
    keep = byte < 256  # the byte index's EOS pseudo-token is not text
    delta = np.full((n + 1, 256), n, dtype=np.int32)
    delta[num[src[keep]], byte[keep]] = num[dst[keep]]
    delta[num[pre]] = n  # the state before \x01 is not ours: no longer co-reachable, trimmed
    accept = np.zeros(n + 1, dtype=bool)
    fin = np.fromiter(index.get_final_states(), dtype=np.int64)
    fin = fin[fin < top]
    fin = fin[seen[fin] | (fin == init)]
    accept[num[fin]] = True
    final = accept[delta[:n, 0]]
    # the sentinel itself is not text: drop \x00 moves into states that only end the match
    has_out = np.append((delta[:n] < n).any(axis=1), False)
    delta[:n, 0] = np.where(has_out[delta[:n, 0]] & ~accept[delta[:n, 0]], delta[:n, 0], n)
    return delta, final


def _index_edges(index: Index) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source state, byte, target state) int64 [E] of every transition of `index`, from its dicts (the
    reference of index_numba.py's `decode_index`)."""
    trans = index.get_transitions()
    rows = list(trans.values())
    lens = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    src = np.repeat(np.fromiter(trans.keys(), dtype=np.int64, count=len(rows)), lens)
    total = int(lens.sum())
    byte = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=total)
    dst = np.fromiter(chain.from_iterable(map(dict.values, rows)), dtype=np.int64, count=total)
    return src, byte, dst


def _decoded_edges(index: Index) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_index_edges` read from the Index's binary form (index_numba.py), the reference where that fails."""
    from constraints.index_numba import decode_index

    return decode_index(index, _BYTE_EOS) or _index_edges(index)


def _decoded_table(index: Index, trim: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """index_numba.py's `leaf_table`: the Index's table (trimmed or not) in one compiled pass; None where its
    binary form is not read there."""
    from constraints.index_numba import leaf_table

    return leaf_table(index, _BYTE_EOS, trim)


def _no_table(index: Index, trim: bool) -> None:
    """The references have no one-pass table: their callers take `_index_dfa` and `_trim` step by step."""
    return None


def _trim(delta: np.ndarray, final: np.ndarray, steps: Steps | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The co-reachable states (those that can reach a final state), renumbered in order; `steps` None: the
    rule `steps_for`.

    ValueError when the start is not among them (the regex matches no string)."""
    n = final.size
    live = _live(delta, final, steps or steps_for(n))
    m = int(live.sum())
    if m == n:  # every state kept: the renumbering is the identity (a gather of the whole table saved)
        return delta.astype(np.int32, copy=False), final[live]
    renum = np.full(n + 1, m, dtype=np.int32)
    renum[np.nonzero(live)[0]] = np.arange(m, dtype=np.int32)
    # one int32 gather (after a minimisation at most one state goes: most rows are kept, none copied twice)
    return np.take(renum, delta[np.append(live, True)]), final[live]


def _live(delta: np.ndarray, final: np.ndarray, steps: Steps) -> np.ndarray:
    """Bool [n]: the co-reachable states; ValueError when the start is not one (the regex matches nothing)."""
    live = steps.live(delta, final)
    if not live[0]:
        raise ValueError("the constraint's regex matches no string")
    return live


def _coreachable(delta: np.ndarray, final: np.ndarray) -> np.ndarray:
    """Bool [n]: states that can reach a final state (the reference of automaton_numba.py's `coreachable`)."""
    n = final.size
    src, byte = np.nonzero(delta[:n] < n)
    dst = delta[src, byte]
    live = final.copy()
    # reversed edges in CSR form: a level-synchronous backward search over whole frontiers
    order = np.argsort(dst, kind="stable")
    rsrc = src[order]
    start = np.searchsorted(dst[order], np.arange(n + 1))
    frontier = np.nonzero(final)[0]
    while frontier.size:
        lo, hi = start[frontier], start[frontier + 1]
        preds = rsrc[csr_ranges(lo, hi)]
        preds = np.unique(preds[~live[preds]])
        live[preds] = True
        frontier = preds
    return live


def minimise(
    delta: np.ndarray, final: np.ndarray, steps: Steps | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The minimal automaton of the same language; states numbered by their first member, the start first.

    The dead row stays alone (states that cannot reach a final state stay, for `_trim`). Moore's refinement
    (moore.py), with the states' signatures (block, successor block per byte class) summarised by 64-bit
    hashes; the partition it ends with is then checked exactly to be a congruence that respects finality,
    which makes the quotient the same language whatever the hashes did (a failed check, odds ~2^-64, redoes
    it exactly).
    With the compiled steps (`steps_for`: from NUMBA_STATES states on), Hopcroft's algorithm
    (partition_numba.py; no hashes) finds the same partition: the coarsest one refining {final, non-final,
    dead} is unique, so the table is the same too.
    """
    steps = steps or steps_for(final.size)
    cls, reps = steps.classes(delta)  # delta[:, b] is cols[:, cls[b]]
    return minimise_classes(delta[:, reps], cls, final, steps)


def minimise_classes(
    cols: np.ndarray, cls: np.ndarray, final: np.ndarray, steps: Steps | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`minimise` of the automaton whose byte b moves as column cls[b] of `cols` [n+1, C] (dead row n):
    the same table, read from piece_nfa.py's `determinise_classes` without its 256-wide table. Two classes
    may move alike (they need not be the coarsest): the coarsest partition, hence the table, is the same."""
    steps = steps or steps_for(final.size)
    return steps.quotient(cols, cls, final, steps.blocks(cols, final))


def _quotient(
    cols: np.ndarray, cls: np.ndarray, final: np.ndarray, block: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The table of the quotient automaton: (delta [m+1, B] int32, final [m]) of the blocks of the states
    of `cols` [n+1, C] (byte b moving as column cls[b], B = cls.size: 256, or C for the quotient by class),
    numbered by first member (the reference of partition_numba.py's `quotient`)."""
    # dense ids by first member: the start's block is 0, the dead state's (alone, the last row) is last
    _, first, block = np.unique(block, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first)] = np.arange(first.size)
    block, first = rank[block.reshape(-1)], np.sort(first)
    m = first.size - 1
    out = np.full((m + 1, cls.size), m, dtype=np.int32)
    # the class columns' blocks, spread over the bytes of each class: the same table as block[delta[first]]
    # without its [m, 256] int64 temporary (40% of minimise on large automata)
    np.take(block.astype(np.int32)[cols[first[:m]]], cls, axis=1, out=out[:m])
    return out, final[first[:m]]


def _hopcroft_blocks(cols: np.ndarray, final: np.ndarray) -> np.ndarray:
    """The compiled partition (automaton_numba.py): the same coarsest partition."""
    from constraints.partition_numba import coarsest_partition

    return coarsest_partition(cols, np.append(final.astype(np.int64), 2))


def _byte_classes(delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class of each byte [256], first byte of each class, ascending) for the bytes whose columns of `delta`
    are identical, classes numbered by first byte (the reference of automaton_numba.py's `byte_classes`)."""
    rng = np.random.default_rng(0xB17E)
    w = rng.integers(1, 2**63, size=delta.shape[0], dtype=np.uint64) | np.uint64(1)
    with np.errstate(over="ignore"):
        h = (delta.astype(np.uint64) * w[:, None]).sum(axis=0, dtype=np.uint64)
    _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if not (delta == delta[:, first[inverse]]).all():  # a hash collision: exact
        _, first, inverse = np.unique(delta.T, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first)] = np.arange(first.size)
    return rank[inverse], np.sort(first)


def _byte_class_reps(delta: np.ndarray) -> np.ndarray:
    """One byte per class of bytes whose columns of `delta` are identical (ascending)."""
    return _byte_classes(delta)[1]


REFERENCE_STEPS = Steps(
    _index_edges, _coreachable, _byte_classes, moore_blocks, _quotient, _no_table, determinise_classes,
    bfs_numbering.bfs_renumbered,
)
