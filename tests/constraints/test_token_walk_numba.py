"""constraints/token_walk_numba.py against its references in constraints/dfa.py (`dense_classes`, `_bfs`).

The compiled kernels must give exactly what the references give, not merely the same language: both number
the token classes in the order of their first token and list the edges by (source, class), and the compile
cache keeps the arrays. Compared on:
- random byte automata (a few hundred states, some of them dead ends, over a small alphabet so that paths
  live long) and random small vocabularies: multi-byte tokens sharing prefixes, duplicates, empty and None
  entries; with every (token, destination) pair kept from the class walk, some of them, or none (the later
  states walked again), and edge arrays that must grow;
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
from constraints.token_walk_numba import bfs, preorder_trie, sparse_classes

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


def both_ways(delta, vocab, kept_pairs=1 << 24, chunk=None):
    trie, pre = compiled_trie(vocab)
    ref = dfa.dense_classes(delta, trie, len(vocab), chunk)
    fast = sparse_classes(delta, pre, len(vocab), kept_pairs)
    return ref, fast


def assert_same(ref, fast, what):
    assert len(ref) == len(fast) == 4
    for name, a, b in zip(("token class", "edge source", "edge class", "edge destination"), ref, fast):
        assert a.dtype == b.dtype and np.array_equal(a, b), (what, name)


@pytest.mark.parametrize(
    "seed,n,size,alphabet,live_p",
    [
        (0, 50, 40, b"ab", 0.9),
        (1, 300, 400, b'ab"{}', 0.6),
        (2, 700, 900, bytes(range(32, 48)) + "é".encode(), 0.5),
        (3, 200, 300, b"xyz", 0.2),  # mostly dead: subtrees skipped early
    ],
)
def test_sparse_classes_give_the_reference_classes_and_edges(seed, n, size, alphabet, live_p):
    rng = np.random.default_rng(seed)
    delta = random_delta(rng, n, alphabet, live_p)
    vocab = random_vocab(rng, size, alphabet)
    ref, fast = both_ways(delta, vocab, chunk=64)  # the reference in several chunks of states
    assert_same(ref, fast, "all pairs kept")
    cls, src, _, _ = ref
    assert src.size > 0 and 1 < cls.max() + 1 < len(vocab)  # a real partition, with edges
    # classes numbered in the order of their first token
    firsts = [int(np.nonzero(cls == k)[0][0]) for k in range(int(cls.max()) + 1)]
    assert firsts == sorted(firsts)
    # the pairs of only the first states kept (the others walked again), or of none: the same arrays
    trie, pre = compiled_trie(vocab)
    for kept in (0, 1, int(rng.integers(2, 4 * n))):
        assert_same(ref, sparse_classes(delta, pre, len(vocab), kept), f"{kept} pairs kept")


def test_sparse_classes_grow_their_edge_arrays():
    """Every byte live from every state, a vocabulary of many one-byte tokens: far more edges per state
    than the first guess when no pairs are kept (the arrays double, the walk goes on where it stopped)."""
    rng = np.random.default_rng(11)
    n = 40
    delta = np.full((n + 1, 256), n, dtype=np.int32)
    delta[:n, :200] = rng.integers(0, n, size=(n, 200))
    vocab = [bytes([b]) for b in range(200)] + [bytes([a, b]) for a, b in rng.integers(0, 200, size=(300, 2))]
    ref, fast = both_ways(delta, vocab, kept_pairs=0)
    assert ref[1].size > 4 * n + int(ref[0].max()) + 16  # more edges than the first arrays hold
    assert_same(ref, fast, "grown")


def test_sparse_classes_on_degenerate_vocabularies():
    rng = np.random.default_rng(5)
    delta = random_delta(rng, 20, b"ab", 0.8)
    for vocab in ([None, b""], [b"a"], [b"ab", b"ab", None, b"a", b"b"]):
        ref, fast = both_ways(delta, vocab)
        assert_same(ref, fast, vocab)


def test_preorder_trie_subtrees():
    """Preorder: a node's subtree is the run of deeper nodes after it, ending at its `skip`."""
    rng = np.random.default_rng(7)
    _, pre = compiled_trie(random_vocab(rng, 500, b"abc"))
    d = pre.depth_N
    assert d[0] == 0 and (d[1:] >= 1).all() and (np.diff(d) <= 1).all()
    for i in range(d.size):
        j = pre.skip_N[i]
        assert (d[i + 1 : j] > d[i]).all() and (j == d.size or d[j] <= d[i])


def test_hash_collision_falls_back_to_an_exact_sort():
    """The reference's column grouping: columns (0, 1) and (1, 0) share their sums under equal weights, so
    no groups are proposed, and `_column_groups` then sorts the columns exactly."""
    nxt = np.asarray([[0, 1, 0, 2], [1, 0, 1, 2]], dtype=np.int32)
    assert dfa._propose_groups(nxt, np.ones((2, 2))) is None
    group, first = np.asarray([0, 1, 0, 2]), np.asarray([0, 1, 3])
    real = dfa._weights
    try:
        dfa._weights = lambda bits, Q: np.ones((2, Q))  # force the collision inside `_column_groups`
        got = dfa._column_groups(nxt)
    finally:
        dfa._weights = real
    assert np.array_equal(got[0], group) and np.array_equal(got[1], first)


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
        out.append(dfa.build_token_dfa(regex, vocab, [1]))
    ref, fast = out
    for k, a in ref.arrays().items():
        b = fast.arrays()[k]
        assert a.dtype == b.dtype and np.array_equal(a, b), (name, k)
    # the classes and edges themselves, the reference in chunks of 256 states, some pairs walked again
    delta, _ = ba.byte_dfa(regex)
    trie = dfa.build_trie(vocab)
    pre = preorder_trie(trie.parent, trie.byte, trie.ends)
    ref = dfa.dense_classes(delta, trie, len(vocab), 256)
    assert_same(ref, sparse_classes(delta, pre, len(vocab)), name)
    assert_same(ref, sparse_classes(delta, pre, len(vocab), 50_000), f"{name}, 50,000 pairs kept")


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
