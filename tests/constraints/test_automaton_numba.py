"""constraints/automaton_numba.py against its references; constraints/budget.py's scan against its first form.

The compiled kernels must return exactly the tables the numpy references return (same state numbering, same
transitions, same final flags), not merely the same language: the token automaton and the compile cache are
built from these tables. Each comparison forces both paths by patching NUMBA_STATES (byte_automaton.py's copy
for `minimise`, piece_nfa.py's for `determinise`) on:
- random DFAs of a few hundred to a few thousand states with many equivalent states (minimisation);
- random NFAs of DFA pieces joined by links, 500-3,500 states (subset construction);
- real schemas (JSONSchemaBench files shipped under tests/constraints/data) and a union of three similar
  objects, compiled both ways end to end.
The budget scan (`estimate_states`, memoised across calls) must give what the plain scan it replaced gave
(`_reference_estimate`, copied from the committed constraints/budget.py before the change) on random regexes
that repeat and nest large groups, in random call orders, and on the regexes of the shipped schemas.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from constraints import bfs_numbering, budget, index_numba, moore
from constraints import byte_automaton as ba
from constraints import composed_dfa as cd
from constraints import piece_nfa as pn
from constraints.automaton_numba import bfs_renumbered, byte_class_reps, byte_classes, coreachable
from constraints.partition_numba import coarsest_partition, quotient
from constraints.schema_errors import UnsupportedSchema
from constraints.schema_regex import schema_to_regex

DATA = Path(__file__).parent / "data"
NEVER = 10**12  # a NUMBA_STATES no automaton reaches: the numpy reference runs


def both_ways(monkeypatch, fn):
    """fn() with the references (NUMBA_STATES out of reach, and byte_automaton.py's composed builds, which
    take the compiled steps whatever the size, given the references), then with the kernels (NUMBA_STATES
    0, the compiled steps)."""
    out = []
    compiled = ba.compiled_steps
    for threshold, steps in ((NEVER, lambda: ba.REFERENCE_STEPS), (0, compiled)):
        monkeypatch.setattr(ba, "NUMBA_STATES", threshold)
        monkeypatch.setattr(pn, "NUMBA_STATES", threshold)
        monkeypatch.setattr(ba, "compiled_steps", steps)
        out.append(fn())
    return out


def assert_same_tables(a, b, what=""):
    (d1, f1), (d2, f2) = a, b
    assert d1.shape == d2.shape and f1.shape == f2.shape, (what, d1.shape, d2.shape)
    assert np.array_equal(d1, d2) and np.array_equal(f1, f2), what


# ---- minimisation (Hopcroft vs hashed Moore) ----


def redundant_dfa(rng: np.random.Generator, n: int, k: int, C: int, final_p: float = 0.3):
    """A DFA of n states (+ dead row) that is k-state DFA's states copied: each copy moves to a random copy of
    its target, so the minimal automaton has at most k states. Bytes fall into C classes."""
    small = rng.integers(0, k + 1, size=(k, C))  # k: dead
    small_final = rng.random(k) < final_p
    of = np.concatenate([np.arange(k), rng.integers(0, k, size=n - k)])  # copy -> small state
    copies = [np.nonzero(of == j)[0] for j in range(k)]
    tbl = np.full((n, C), n, dtype=np.int32)
    for s in range(n):
        for c in range(C):
            t = small[of[s], c]
            if t < k:
                tbl[s, c] = copies[t][rng.integers(0, copies[t].size)]
    byte_cls = np.sort(rng.integers(0, C, size=256))
    byte_cls[:C] = np.arange(C)  # every class has a byte
    delta = np.full((n + 1, 256), n, dtype=np.int32)
    delta[:n] = tbl[:, byte_cls]
    return delta, small_final[of]


@pytest.mark.parametrize(
    "seed,n,k,C", [(0, 300, 40, 3), (1, 1000, 150, 5), (2, 3000, 400, 4), (3, 2500, 2400, 2)]
)
def test_minimise_kernel_gives_the_reference_table(monkeypatch, seed, n, k, C):
    delta, final = redundant_dfa(np.random.default_rng(seed), n, k, C)
    ref, fast = both_ways(monkeypatch, lambda: ba.minimise(delta, final))
    assert_same_tables(ref, fast)
    assert ref[1].size <= k


@pytest.mark.parametrize("final_p", [0.0, 1.0])
def test_minimise_kernel_with_an_empty_initial_block(monkeypatch, final_p):
    """No final state (or no non-final one): one of the three initial blocks is empty."""
    delta, final = redundant_dfa(np.random.default_rng(5), 600, 50, 3, final_p)
    ref, fast = both_ways(monkeypatch, lambda: ba.minimise(delta, final))
    assert_same_tables(ref, fast)


@pytest.mark.parametrize("seed", range(6))
def test_byte_class_kernel_gives_the_reference_classes(seed):
    """Random tables whose bytes fall into a few classes, plus rows that split one class late (the kernel's
    regrouping) and a table with every byte its own class."""
    rng = np.random.default_rng(seed)
    delta, _ = redundant_dfa(rng, 400, 60, 2 + seed)
    row = int(rng.integers(0, 400))
    delta[row, rng.integers(0, 256, size=3)] = 7  # a late split of some classes
    assert np.array_equal(byte_class_reps(delta), ba._byte_class_reps(delta))
    every = rng.permutation(256 * 5).reshape(5, 256).astype(np.int32) % 300
    assert np.array_equal(byte_class_reps(every), ba._byte_class_reps(every))
    for table in (delta, every):  # the class of each byte too (minimise spreads class columns by it)
        for got, want in zip(byte_classes(table), ba._byte_classes(table)):
            assert np.array_equal(got, want)


@pytest.mark.parametrize("seed", range(3))
def test_minimise_by_class_gives_the_table_of_minimise(monkeypatch, seed):
    """The composed build minimises determinise_classes' tables without spreading them to 256 bytes: the
    same table as `minimise` of the spread one, with the coarsest classes, with finer ones (columns that
    move alike, as a subset construction's classes may) and with every byte its own class."""
    rng = np.random.default_rng(seed)
    delta, final = redundant_dfa(rng, 900, 70, 5)
    cls, reps = ba._byte_classes(delta)
    fine = rng.integers(0, 3, size=256) * (cls.max() + 1) + cls  # each class split by a random tag
    _, first, fine = np.unique(fine, return_index=True, return_inverse=True)
    ways = [(delta[:, reps], cls), (delta[:, first], fine.reshape(-1)), (delta, np.arange(256))]
    for cols, of_byte in ways:
        assert np.array_equal(np.take(cols, of_byte, axis=1), delta)
        ref, fast = both_ways(monkeypatch, lambda c=cols, b=of_byte: ba.minimise_classes(c, b, final))
        want = ba.minimise(delta, final)
        assert_same_tables(ref, want)
        assert_same_tables(fast, want)


@pytest.mark.parametrize("seed,reach_p", [(0, 0.995), (1, 0.9), (2, 0.0), (3, 0.999)])
def test_bfs_renumber_kernel_gives_the_reference_table(seed, reach_p):
    """Sparse random tables (some states never met: they follow, ascending), dense ones, a one-state one,
    each with all states live and with some not (read as the dead state)."""
    rng = np.random.default_rng(seed)
    for n in (1, 7, 900):
        delta = rng.integers(0, n + 1, size=(n + 1, 256)).astype(np.int32)
        delta[rng.random((n + 1, 256)) < reach_p] = n
        delta[n] = n
        final = rng.random(n) < 0.3
        for live in (np.ones(n, dtype=bool), np.append(True, rng.random(n - 1) < 0.8)):
            got, want = bfs_renumbered(delta, final, live), bfs_numbering.bfs_renumbered(delta, final, live)
            assert_same_tables(got, want)
            assert got[1].size == live.sum()


def test_breadth_first_numbering_keeps_the_language():
    """Renumbered, a minimal table is the same automaton: state order[i] is state i, the dead row last."""
    delta, final = redundant_dfa(np.random.default_rng(9), 500, 60, 4)
    delta, final = ba.minimise(delta, final)
    n = final.size
    order = bfs_numbering.bfs_order(delta)
    new_delta, new_final = bfs_numbering.bfs_renumbered(delta, final, np.ones(n, dtype=bool))
    renamed = np.empty(n + 1, dtype=np.int64)
    renamed[np.append(order, n)] = np.arange(n + 1)
    assert np.array_equal(new_final[renamed[:n]], final)
    assert np.array_equal(new_delta[renamed], renamed[delta])


@pytest.mark.parametrize("seed", range(4))
def test_coreachable_kernel_gives_the_reference_set(seed):
    rng = np.random.default_rng(seed)
    n = 800
    delta = rng.integers(0, n + 1, size=(n + 1, 256)).astype(np.int32)
    delta[rng.random((n + 1, 256)) < 0.995] = n  # sparse moves: many states cannot reach a final one
    delta[n] = n
    final = rng.random(n) < 0.01
    assert np.array_equal(coreachable(delta, final), ba._coreachable(delta, final))


def test_coarsest_partition_equals_exact_moore():
    """The kernel alone against exact Moore refinement: the same partition (ids compared by first member)."""
    delta, final = redundant_dfa(np.random.default_rng(7), 1500, 200, 4)
    cols = delta[:, ba._byte_class_reps(delta)]

    def canonical(block):
        _, first, inv = np.unique(block, return_index=True, return_inverse=True)
        return np.argsort(np.argsort(first))[inv.reshape(-1)]

    fast = coarsest_partition(cols, np.append(final.astype(np.int64), 2))
    assert np.array_equal(canonical(fast), canonical(moore.moore_exact(cols, final)))



@pytest.mark.parametrize("seed", range(3))
def test_the_compiled_quotient_table_is_the_reference(seed):
    """partition_numba.quotient against byte_automaton._quotient: the same table, the same final flags."""
    delta, final = redundant_dfa(np.random.default_rng(seed), 800 + 300 * seed, 60 + seed, 2 + seed)
    cls, reps = ba._byte_classes(delta)
    cols = delta[:, reps]
    block = coarsest_partition(cols, np.append(final.astype(np.int64), 2))
    got, ref = quotient(cols, cls, final, block), ba._quotient(cols, cls, final, block)
    assert_same_tables(got, ref)
    assert got[0].dtype == ref[0].dtype == np.int32
    # by class (byte_automaton.py `_by_first_byte`): one column per class, the 256-wide table spread from it
    ident = np.arange(cols.shape[1])
    got_c, ref_c = quotient(cols, ident, final, block), ba._quotient(cols, ident, final, block)
    assert_same_tables(got_c, ref_c)
    assert got_c[0].shape[1] == cols.shape[1] and np.array_equal(np.take(got_c[0], cls, axis=1), got[0])


def _exact_refinement(cols: np.ndarray, block: np.ndarray) -> np.ndarray:
    """Moore's refinement from any initial blocks, on exact row sorts (the spec for the test below)."""
    n_blocks = np.unique(block).size
    while True:
        sig = np.concatenate([block[:, None], block[cols]], axis=1)
        _, block = np.unique(sig, axis=0, return_inverse=True)
        block = block.reshape(-1)
        if block.max() + 1 == n_blocks:
            return block
        n_blocks = block.max() + 1


@pytest.mark.parametrize("seed", range(4))
def test_coarsest_partition_from_any_initial_blocks(seed):
    """The block left out of the first splitters (the one most moves go into) is a block of several states
    here, or one of one state that is not the dead row: the same partition as exact refinement."""
    rng = np.random.default_rng(seed)
    N, C = int(rng.integers(50, 400)), int(rng.integers(1, 6))
    k = int(rng.integers(2, 12))
    small = rng.integers(0, k, size=(k, C))
    of = np.concatenate([np.arange(k), rng.integers(0, k, size=N - k)])  # copies of a k-state table
    cols = np.empty((N, C), dtype=np.int32)
    for s in range(N):
        for c in range(C):
            targets = np.nonzero(of == small[of[s], c])[0]
            cols[s, c] = rng.choice(targets)
    block = rng.integers(0, int(rng.integers(1, 5)), size=N)
    if seed == 3:  # a lone state most moves go into
        cols[rng.random((N, C)) < 0.8] = N - 1
        block = np.where(np.arange(N) == N - 1, 9, block)
    _, block = np.unique(block, return_inverse=True)
    fast = coarsest_partition(cols, block.reshape(-1).astype(np.int64))

    def canonical(b):
        _, first, inv = np.unique(b, return_index=True, return_inverse=True)
        return np.argsort(np.argsort(first))[inv.reshape(-1)]

    assert np.array_equal(canonical(fast), canonical(_exact_refinement(cols, block.reshape(-1))))

# ---- subset construction ----

CLASS_MAPS = [np.random.default_rng(s).integers(0, 4, size=256) for s in range(3)]


def random_piece(rng: np.random.Generator, n: int):
    """A leaf-like DFA: a 3-byte key (as a JSON key starts an object member), then a body that moves only a
    few states forward (left to right over its text), many moves missing; final at the end and at two random
    body states. Body bytes fall into classes from one of three maps shared by the pieces."""
    cls = CLASS_MAPS[int(rng.integers(0, 3))] % int(rng.integers(2, 5))
    k = int(cls.max()) + 1
    tbl = np.minimum(np.arange(n)[:, None] + rng.integers(1, 4, size=(n, k)), n)
    tbl[rng.random((n, k)) < 0.4] = n
    delta = np.full((n + 1, 256), n, dtype=np.int32)
    delta[:n] = tbl[:, cls]
    delta[:3] = n
    delta[np.arange(3), rng.integers(0, 256, size=3)] = np.arange(1, 4)
    final = np.zeros(n, dtype=bool)
    final[n - 1] = True
    final[rng.integers(3, n, size=2)] = True
    return delta, final


def random_nfa(seed: int):
    """Pieces (some copied twice) chained in a random order, an optional stretch and a loop over the end."""
    rng = np.random.default_rng(seed)
    nfa, pieces, frags = pn.Nfa(), [], []
    n = int(rng.integers(30, 300))
    for _ in range(int(rng.integers(3, 12))):
        pieces.append(random_piece(rng, int(rng.integers(n // 2, n + 1))))  # kept alive: Nfa keys by id
        for _ in range(int(rng.integers(1, 3))):
            frags.append(nfa.piece(pieces[-1]))
    order = rng.permutation(len(frags))
    for a, b in zip(order[:-1], order[1:]):
        nfa.link(frags[a][1], frags[b][0])
    a, b = sorted(rng.choice(len(frags), size=2, replace=False).tolist())
    nfa.link(frags[order[a]][1], frags[order[b]][0])  # an optional stretch: jump from a to b
    nfa.link(frags[order[-1]][1], frags[order[-3]][0])  # a loop over the last pieces
    return nfa, set(frags[order[0]][0]), set(frags[order[-1]][1]), bool(rng.random() < 0.5), pieces


@pytest.mark.parametrize("seed", [0, 2, 6, 8, 13, 15, 21, 24])  # minimal DFAs of 10 to 13,789 states
def test_explore_kernel_gives_the_reference_table(monkeypatch, seed):
    nfa, entries, exits, nullable, _pieces = random_nfa(seed)
    assert 500 <= nfa.size <= 3500
    ref, fast = both_ways(monkeypatch, lambda: pn.determinise(nfa, entries, exits, nullable))
    assert_same_tables(ref, fast, f"seed {seed}")


# ---- real schemas, end to end ----

REAL = [
    "not_oneof_allof/JsonSchemaStore_schema-catalog.json",  # overlapping oneOf: composed, NFA of 766 states
    "not_oneof_allof/Github_hard_o1051.json",  # 3,702 minimal states
    "not_oneof_allof/Snowplow_sp_378_Normalized.json",
    "counting_conditionals/JsonSchemaStore_adonisrc.schema.json",
]


@pytest.mark.parametrize("name", REAL)
def test_real_schemas_compile_to_the_same_table(monkeypatch, name):
    regex = schema_to_regex(json.loads((DATA / name).read_text()))
    monkeypatch.setattr(ba, "COMPOSE_CHARS", 1_000)  # built part by part: both kernels run
    monkeypatch.setattr(cd, "LEAF_CHARS", 300)
    ref, fast = both_ways(monkeypatch, lambda: ba.byte_dfa(regex))
    assert_same_tables(ref, fast, name)


def test_union_of_similar_objects_at_the_default_threshold(monkeypatch):
    """anyOf of three objects sharing 24 optional bounded strings: the composed NFA (9k states) is past the
    default NUMBA_STATES, so the shipped threshold runs the kernels; forcing the references gives the same."""

    def obj(tag: str) -> dict:
        props: dict = {f"field_{i}": {"type": "string", "maxLength": 12} for i in range(24)}
        props.update(kind={"const": tag}, count={"type": "integer"})
        return {"type": "object", "properties": props, "required": ["kind"]}

    regex = schema_to_regex({"anyOf": [obj("a"), obj("b"), obj("c")]})
    monkeypatch.setattr(ba, "COMPOSE_CHARS", 1_000)
    monkeypatch.setattr(cd, "LEAF_CHARS", 300)
    sizes = []
    real_determinise = ba.determinise_compiled  # the composed build's kernel (its compiled steps')
    monkeypatch.setattr(
        ba, "determinise_compiled", lambda nfa, *a: sizes.append(nfa.size) or real_determinise(nfa, *a)
    )
    shipped = ba.byte_dfa(regex)
    assert max(sizes) >= pn.NUMBA_STATES
    monkeypatch.setattr(ba, "NUMBA_STATES", NEVER)
    monkeypatch.setattr(pn, "NUMBA_STATES", NEVER)
    monkeypatch.setattr(ba, "compiled_steps", lambda: ba.REFERENCE_STEPS)
    assert_same_tables(ba.byte_dfa(regex), shipped)


def test_a_composed_build_takes_the_compiled_steps_for_its_small_parts(monkeypatch):
    """Past COMPOSE_CHARS every leaf and part uses the compiled steps, even far below NUMBA_STATES."""
    regex = schema_to_regex(json.loads((DATA / REAL[2]).read_text()))
    monkeypatch.setattr(ba, "COMPOSE_CHARS", 1_000)
    monkeypatch.setattr(cd, "LEAF_CHARS", 300)
    sizes = []
    real = ba.compiled_steps()
    monkeypatch.setattr(ba, "compiled_steps", lambda: dataclasses.replace(
        real, live=lambda d, f: sizes.append(f.size) or real.live(d, f)))
    real_leaf = index_numba.leaf_table  # the leaves: decoded and trimmed in one compiled pass

    def leaf_table(*args):
        dfa = real_leaf(*args)
        sizes.append(dfa[1].size)
        return dfa

    monkeypatch.setattr(index_numba, "leaf_table", leaf_table)
    ba.byte_dfa(regex)
    assert len(sizes) > 3 and min(sizes) < 100 < ba.NUMBA_STATES


# ---- the budget scan ----

_COUNT = re.compile(r"\{(\d*)(,?)(\d*)\}")


def _reference_estimate(regex: str) -> int:
    """estimate_states as committed before the memoised token scan (the oracle), unchanged but for names."""
    stack: list[list[list[int]]] = [[[0, 0]]]
    opened: list[int] = []
    seen: set[str] = set()
    last = [0, 0]

    def add(d: int, f: int) -> None:
        stack[-1][-1][0] += d
        stack[-1][-1][1] += f

    i, n = 0, len(regex)
    while i < n:
        ch = regex[i]
        if ch == "\\":
            i, last = i + 2, [1, 1]
            if regex[i - 1 : i] == "x":
                i += 2
            add(1, 1)
            continue
        if ch == "[":
            j = i + 1
            if j < n and regex[j] == "^":
                j += 1
            j += 1
            while j < n and regex[j] != "]":
                j += 2 if regex[j] == "\\" else 1
            body = regex[i + 1 : j]
            k = 1 + (budget.UTF_8_STATES if body.startswith("^") or any(ord(c) > 127 for c in body) else 0)
            last = [k, k]
            add(k, k)
            i = j + 1
            continue
        if ch == "(":
            stack.append([[0, 0]])
            opened.append(i)
            i += 3 if regex.startswith("(?:", i) else 1
            continue
        if ch == "|":
            stack[-1].append([0, 0])
            i += 1
            continue
        if ch == ")":
            alts, start = stack.pop(), opened.pop()
            last = [sum(a[0] for a in alts), sum(a[1] for a in alts)]
            if i - start > budget.SHARED_CHARS:
                text = regex[start : i + 1]
                if text in seen:
                    last[0] = last[0] // budget.SHARED_WEIGHT + 1
                seen.add(text)
            add(*last)
            i += 1
            continue
        if ch in "?*+":
            i += 1
            continue
        if ch == "{":
            m = _COUNT.match(regex, i)
            if m:
                lo, hi = int(m.group(1) or 0), m.group(3)
                times = max(lo, int(hi) if hi else lo + 1, 1)
                add(last[1] * (times - 1), last[1] * (times - 1))
                i = m.end()
                continue
        add(1, 1)
        last = [1, 1]
        i += 1
    while len(stack) > 1:
        alts = stack.pop()
        add(sum(a[0] for a in alts), sum(a[1] for a in alts))
    return sum(a[0] for a in stack[0])


ATOMS = ["ab", '"key":', "\\.", "\\x41", "\\u00e9", "[a-z]", "[^\"\\\\]", "[é-ü]", "[]a]", "[^]b]", "{",
         "x{2}", "y{1,3}", "z{2,}", "w{,}", "q?", "r*", "s+", "(?:t|u)", "(v)", "é", "$", "^"]  # fmt: skip


def random_budget_regex(rng: random.Random, pool: list[str], depth: int) -> str:
    """Atoms, alternations, quantified groups, and large groups drawn from `pool` (so written again)."""
    parts = []
    while sum(len(p) for p in parts) < rng.randint(50, 700):
        r = rng.random()
        if pool and r < 0.25:
            parts.append(rng.choice(pool) + rng.choice(["", "", "?", "{2}", "{0,3}", "*"]))
        elif depth and r < 0.45:
            body = random_budget_regex(rng, pool, depth - 1)
            group = f"(?:{body}|{rng.choice(ATOMS)})" if rng.random() < 0.3 else f"(?:{body})"
            parts.append(group + rng.choice(["", "", "?", "{3}", "+"]))
            if len(group) > budget.SHARED_CHARS and rng.random() < 0.5:
                pool.append(group)
        else:
            parts.append(rng.choice(ATOMS))
    return "".join(parts)


@pytest.fixture
def fresh_memo(monkeypatch):
    monkeypatch.setattr(budget, "_MEMO", budget._Memo())


@pytest.mark.parametrize("kept_chars", [budget._KEPT_CHARS, 3_000])  # 3,000: the memo restarts mid-scan
def test_budget_scan_equals_the_plain_scan(fresh_memo, monkeypatch, kept_chars):
    monkeypatch.setattr(budget, "_KEPT_CHARS", kept_chars)
    rng = random.Random(11)
    pool: list[str] = []
    regexes = [random_budget_regex(rng, pool, 3) for _ in range(40)]
    # as schema_regex.py calls it: inner parts first, then the whole that holds them, some texts twice
    calls = pool + regexes + [a + b for a, b in zip(regexes, regexes[1:])] + rng.sample(regexes, 10)
    rng.shuffle(calls)
    assert sum(len(t) > 1_000 for t in calls) > 10 and sum(r.count(g) for r in regexes for g in pool) > 100
    for text in calls:
        assert budget.estimate_states(text) == _reference_estimate(text), text[:80]


def test_compiled_budget_scan_equals_the_plain_scan():
    """budget_numba.py's kernel against the oracle on random regexes that repeat large groups, the same
    doubled and counted, non-ASCII classes; None (the Python scan decides) past int64 and on an unopened
    ")"."""
    from constraints.budget_numba import estimate

    def compiled(text: str) -> int | None:
        return estimate(text, budget.SHARED_CHARS, budget.SHARED_WEIGHT, budget.UTF_8_STATES)

    rng = random.Random(5)
    pool: list[str] = []
    for _ in range(120):
        regex = random_budget_regex(rng, pool, 3)
        for text in (regex, regex + "é" + regex, f"(?:{regex}){{3}}", f"[é]({regex}|{regex})"):
            assert compiled(text) == _reference_estimate(text), text[:80]
    for text in ("(ab", "[^a]é{2}", "\\x41{3}", "x{,}", "{", "a{2,", "[", "\\", "(?:", "a{0}b{3,1}"):
        assert compiled(text) == _reference_estimate(text), text
    assert compiled("a{99999999999999999999}") is None and compiled("(?:ab{4000000000}){4000000000}") is None
    assert compiled("ab)") is None and compiled("é{\u0663}") is None  # Python's \\d reads the Arabic-Indic 3


def test_budget_scan_on_the_shipped_schemas(fresh_memo, monkeypatch):
    """Every check_size call of the translation (each array / object part, inner parts first), the whole."""
    calls = []
    memoised = budget.estimate_states

    def checked(regex: str) -> int:
        n = memoised(regex)
        assert n == _reference_estimate(regex), regex[:80]
        calls.append(regex)
        return n

    monkeypatch.setattr(budget, "estimate_states", checked)
    monkeypatch.setattr(budget, "COMPILED_CHARS", 2_000)  # the compiled scan too, on the longer parts
    for f in sorted(DATA.glob("*/*.json")):
        try:
            regex = schema_to_regex(json.loads(f.read_text()))
        except UnsupportedSchema:
            continue
        checked(regex)
    assert len(calls) >= 100
