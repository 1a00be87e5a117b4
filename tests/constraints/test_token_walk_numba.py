"""constraints/token_walk_numba.py against its references in constraints/dfa.py (`walk`, `_propose_groups`).

The compiled kernels must give exactly what the references give, not merely the same language: the token
classes are numbered in the order the hashed grouping numbers them, and the compile cache keeps the arrays.
Compared on:
- random byte automata (a few hundred states, some of them dead ends, over a small alphabet so that paths
  live long) and random small vocabularies: multi-byte tokens sharing prefixes, duplicates, empty and None
  entries;
- random next-state tables with many equal columns, and a forced collision of the hashes (both fall back);
- random graphs for the token-distance search (`bfs` against dfa.py's `_bfs`): long chains, several
  sources (repeated), unreachable nodes, no edges at all;
- real schemas (shipped under tests/constraints/data) against the shipped tokenizer's vocabulary, built end
  to end both ways by patching byte_automaton.py's NUMBA_STATES (its `compiled_at`, the rule of both builds).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from constraints import byte_automaton as ba
from constraints import dfa
from constraints.schema_regex import schema_to_regex
from constraints.token_walk_numba import bfs, hashed_groups, preorder_trie, walk_preorder

DATA = Path(__file__).parent / "data"
NEVER = 10**12  # a NUMBA_STATES no automaton reaches: the numpy references run


def random_delta(rng: np.random.Generator, n: int, alphabet: bytes, live_p: float) -> np.ndarray:
    """delta [n+1, 256] (row n dead): bytes of `alphabet` move to a random state with probability live_p,
    every other byte is dead; a tenth of the states are dead ends (every byte dead)."""
    delta = np.full((n + 1, 256), n, dtype=np.int32)
    cols = np.frombuffer(alphabet, dtype=np.uint8)
    live = rng.random((n, cols.size)) < live_p
    delta[:n, cols] = np.where(live, rng.integers(0, n, size=(n, cols.size)), n)
    delta[np.nonzero(rng.random(n) < 0.1)[0]] = n
    return delta


def random_vocab(rng: np.random.Generator, size: int, alphabet: bytes) -> list[bytes | None]:
    """Tokens of 1-6 bytes over `alphabet` (many shared prefixes), some repeated, some empty or None."""
    vocab: list[bytes | None] = []
    for _ in range(size):
        r = rng.random()
        if r < 0.05:
            vocab.append(None)
        elif r < 0.08:
            vocab.append(b"")
        elif r < 0.12 and vocab:
            vocab.append(vocab[int(rng.integers(0, len(vocab)))])
        else:
            n = int(rng.integers(1, 7))
            vocab.append(bytes(alphabet[int(i)] for i in rng.integers(0, len(alphabet), size=n)))
    return vocab


def compiled_trie(vocab: list[bytes | None]):
    trie = dfa.build_trie(vocab)
    return trie, preorder_trie(trie.parent, trie.byte, trie.ends)


@pytest.mark.parametrize(
    "seed,n,size,alphabet,live_p",
    [
        (0, 50, 40, b"ab", 0.9),
        (1, 300, 400, b'ab"{}', 0.6),
        (2, 700, 900, bytes(range(32, 48)) + "é".encode(), 0.5),
        (3, 200, 300, b"xyz", 0.2),  # mostly dead: subtrees skipped early
    ],
)
def test_walk_kernel_gives_the_reference_columns(seed, n, size, alphabet, live_p):
    rng = np.random.default_rng(seed)
    delta = random_delta(rng, n, alphabet, live_p)
    vocab = random_vocab(rng, size, alphabet)
    trie, pre = compiled_trie(vocab)
    states = rng.permutation(n)
    for lo in range(0, n, 64):  # chunks of states, in a random order, the dead row included once
        q = np.append(states[lo : lo + 64], n) if lo == 0 else states[lo : lo + 64]
        ref = dfa.walk(delta, trie, q, len(vocab))
        fast = walk_preorder(delta, pre, q, len(vocab))
        assert fast.dtype == ref.dtype and np.array_equal(ref, fast), (seed, lo)


def test_walk_kernel_on_degenerate_vocabularies():
    rng = np.random.default_rng(5)
    delta = random_delta(rng, 20, b"ab", 0.8)
    q = np.arange(20)
    for vocab in ([], [None, b""], [b"a"], [b"ab", b"ab", None, b"a", b"b"]):
        trie, pre = compiled_trie(vocab)
        assert np.array_equal(dfa.walk(delta, trie, q, len(vocab)), walk_preorder(delta, pre, q, len(vocab)))


def test_preorder_trie_subtrees():
    """Preorder: a node's subtree is the run of deeper nodes after it, ending at its `skip`."""
    rng = np.random.default_rng(7)
    _, pre = compiled_trie(random_vocab(rng, 500, b"abc"))
    d = pre.depth_N
    assert d[0] == 0 and (d[1:] >= 1).all() and (np.diff(d) <= 1).all()
    for i in range(d.size):
        j = pre.skip_N[i]
        assert (d[i + 1 : j] > d[i]).all() and (j == d.size or d[j] <= d[i])


@pytest.mark.parametrize("seed,Q,V,n", [(0, 7, 400, 3), (1, 50, 300, 40), (2, 1, 10, 2), (3, 64, 2000, 500)])
def test_hashed_groups_give_the_reference_groups(seed, Q, V, n):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, n, size=(Q, max(V // 4, 1)))
    nxt = base[:, rng.integers(0, base.shape[1], size=V)].astype(np.int32)  # many equal columns
    nxt[:, rng.random(V) < 0.1] = n  # some columns dead throughout
    w = rng.integers(0, 2**30, size=(2, Q)).astype(np.float64)
    ref, fast = dfa._propose_groups(nxt, w), hashed_groups(nxt, w)
    assert ref is not None and fast is not None
    assert np.array_equal(ref[0], fast[0]) and np.array_equal(ref[1], fast[1])
    ref, fast = dfa._column_groups(nxt), dfa._column_groups(nxt, hashed_groups)
    assert np.array_equal(ref[0], fast[0]) and np.array_equal(ref[1], fast[1])


def test_hash_collision_falls_back_both_ways():
    """Columns (0, 1) and (1, 0) share their sums under equal weights: neither proposes groups, and
    `_column_groups` then sorts the columns exactly either way."""
    nxt = np.asarray([[0, 1, 0, 2], [1, 0, 1, 2]], dtype=np.int32)
    w = np.ones((2, 2))
    assert dfa._propose_groups(nxt, w) is None and hashed_groups(nxt, w) is None
    group, first = dfa._column_groups(nxt, lambda _nxt, _w: None)
    assert group.tolist() == [0, 1, 0, 2] and first.tolist() == [0, 1, 3]


@pytest.mark.parametrize("seed,n,chunk", [(0, 400, 64), (1, 900, 100), (2, 150, 1000)])
def test_token_classes_both_ways(seed, n, chunk):
    rng = np.random.default_rng(seed)
    alphabet = b'ab"{}:'
    delta = random_delta(rng, n, alphabet, 0.7)
    vocab = random_vocab(rng, 600, alphabet)
    trie = dfa.build_trie(vocab)
    order = np.argsort((delta[:n] < n).sum(axis=1), kind="stable")
    out = [
        dfa._token_classes(delta, trie, order, len(vocab), chunk, steps)
        for steps in (dfa.REFERENCE_TOKEN_STEPS, dfa.compiled_token_steps())
    ]
    for ref, fast in zip(*out):
        assert ref.dtype == fast.dtype and np.array_equal(ref, fast)


REAL = [
    "not_oneof_allof/Github_hard_o1051.json",  # 3,702 minimal byte states
    "counting_conditionals/JsonSchemaStore_adonisrc.schema.json",
]


@pytest.mark.parametrize("name", REAL)
def test_real_schemas_give_the_same_token_dfa(monkeypatch, vocab, name):
    regex = schema_to_regex(json.loads((DATA / name).read_text()))
    out = []
    for threshold in (NEVER, 0):
        monkeypatch.setattr(ba, "NUMBA_STATES", threshold)  # the one rule (`compiled_at`) both builds read
        out.append(dfa.build_token_dfa(regex, vocab, [1], chunk=256))
    ref, fast = out
    for k, a in ref.arrays().items():
        b = fast.arrays()[k]
        assert a.dtype == b.dtype and np.array_equal(a, b), (name, k)


@pytest.mark.parametrize("seed", range(6))
def test_bfs_is_the_level_by_level_search(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    E = 0 if seed == 0 else int(rng.integers(0, 4 * n))
    src, dst = rng.integers(0, n, size=E), rng.integers(0, n, size=E)
    if seed == 1:  # one long chain: a round per node in the reference
        src, dst = np.arange(n - 1), np.arange(1, n)
    sources = rng.integers(0, n, size=int(rng.integers(1, 4)))
    sources = np.concatenate([sources, sources[:1]])
    assert np.array_equal(bfs(src, dst, n, sources), dfa._bfs(src, dst, n, sources))
