"""regex + byte vocabulary -> token-level DFA in token classes, with distances to acceptance.

Legend: S live DFA states (0 is the start), V vocabulary, K token classes, E class edges, Q a chunk of states.

How: byte_automaton.py turns the regex into its minimal byte automaton (outlines-core's, minimised, or for
a large regex composed part by part: composed_dfa.py). We then walk every vocabulary token from every state
ourselves over a byte trie of the vocabulary, instead of asking outlines-core for the token-level Index: its
`get_transitions()` materialises a dict entry per (state, token) (16.7 GB at V=262k for a large schema),
and walking the trie shares work between tokens with a common prefix.

Tokens whose next state is the same from every state (dead counts as a state) form one class, numbered in
the order of their first token; each class has one edge per state it is allowed from, listed by (source,
class). Two ways give the same arrays (`TokenSteps`, chosen once by size): the reference here walks a chunk
of states at a time level by level in numpy and groups the [Q, V] columns of next states exactly (an
integer-exact float hash proposes the groups, an element-wise comparison confirms them); from NUMBA_STATES
byte states on (byte_automaton.py's `compiled_at`) token_walk_numba.py walks each state depth-first and
splits the classes by the allowed (token, next state) pairs only, which are ~1-10% of states x vocabulary
on large schemas. The DONE state (index S) is added by the DP: final states reach it on an EOS id and it
loops on any token.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import time
import types
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

if not __package__:  # compile.py runs this file as a script: register the package without running its
    # __init__ (which loads torch), so the imports below load only numpy and outlines-core
    _pkg = sys.modules.setdefault("constraints", types.ModuleType("constraints"))
    _pkg.__path__ = [os.path.dirname(os.path.abspath(__file__))]

from constraints.byte_automaton import byte_dfa, compiled_at  # noqa: E402
from constraints.csr import csr_ranges  # noqa: E402

__all__ = ["TokenDFA", "build_token_dfa", "build_trie", "byte_dfa", "save_dfa", "walk"]


@dataclass
class TokenDFA:
    """A compiled constraint. Arrays only, so it round-trips through np.savez without pickle."""

    final: np.ndarray  # bool [S]: a complete match ends here (EOS may follow)
    token_class: np.ndarray  # int32 [V]: class of each token, -1 if never allowed
    edge_src: np.ndarray  # int32 [E]
    edge_cls: np.ndarray  # int32 [E]
    edge_dst: np.ndarray  # int32 [E]
    dist: np.ndarray  # int32 [S]: fewest tokens from a state to a final state
    eos_ids: np.ndarray  # int64: EOS ids of the checkpoint (final -> DONE)

    @property
    def n_states(self) -> int:
        return int(self.final.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.token_class.max()) + 1 if self.token_class.size else 0

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_arrays(cls, arrays) -> TokenDFA:
        return cls(**{k: np.asarray(arrays[k]) for k in cls.__dataclass_fields__})

    def step(self, state: int, token: int) -> int:
        """Next state after `token` (-1 if not allowed); a slow helper for tests and validation."""
        c = self.token_class[token]
        hit = np.nonzero((self.edge_src == state) & (self.edge_cls == c))[0]
        return int(self.edge_dst[hit[0]]) if hit.size else -1


@dataclass
class _Trie:
    """Byte trie of the vocabulary, level by level: parent index into the previous level and the byte."""

    parent: list[np.ndarray]  # per level d >= 1: int32 [n_d]
    byte: list[np.ndarray]  # per level d >= 1: uint8 [n_d]
    ends: list[tuple[np.ndarray, np.ndarray]]  # per level: (token ids ending here, their node index)


def build_trie(vocab: list[bytes | None]) -> _Trie:
    levels: list[dict[bytes, int]] = [{b"": 0}]
    parent: list[list[int]] = [[]]
    byte: list[list[int]] = [[]]
    ends: list[tuple[list[int], list[int]]] = [([], [])]
    for tid, tok in enumerate(vocab):
        if not tok:
            continue
        for d in range(1, len(tok) + 1):
            if d == len(levels):
                levels.append({})
                parent.append([])
                byte.append([])
                ends.append(([], []))
            pre = tok[:d]
            node = levels[d].get(pre)
            if node is None:
                node = levels[d][pre] = len(parent[d])
                parent[d].append(levels[d - 1][tok[: d - 1]])
                byte[d].append(tok[d - 1])
        ends[len(tok)][0].append(tid)
        ends[len(tok)][1].append(levels[len(tok)][tok])
    return _Trie(
        [np.asarray(p, dtype=np.int32) for p in parent],
        [np.asarray(b, dtype=np.uint8) for b in byte],
        [(np.asarray(t, dtype=np.int64), np.asarray(i, dtype=np.int64)) for t, i in ends],
    )


def walk(delta: np.ndarray, trie: _Trie, states: np.ndarray, n_vocab: int) -> np.ndarray:
    """Next state of every token from each of `states`: int32 [Q, V]; dead (= S) where not allowed.

    Level by level down the trie; a node dead from every state of the chunk drops its whole subtree.
    """
    dead = delta.shape[0] - 1
    flat = delta.reshape(-1)
    out = np.full((states.shape[0], n_vocab), dead, dtype=np.int32)
    prev = states.astype(np.int32)[:, None] * 256  # [Q, live nodes of the previous level], premultiplied
    prev_col = np.zeros(1, dtype=np.int64)  # node of the previous level -> its column in prev (-1: dead)
    for d in range(1, len(trie.parent)):
        col_of_parent = prev_col[trie.parent[d]]
        kids = np.nonzero(col_of_parent >= 0)[0]
        if kids.size == 0:
            break
        nxt = np.take(flat, prev[:, col_of_parent[kids]] + trie.byte[d][kids])  # [Q, kids]
        node_col = np.full(trie.parent[d].size, -1, dtype=np.int64)
        node_col[kids] = np.arange(kids.size)
        tids, nodes = trie.ends[d]
        if tids.size:
            c = node_col[nodes]
            hit = c >= 0
            out[:, tids[hit]] = nxt[:, c[hit]]
        alive = np.nonzero((nxt != dead).any(axis=0))[0]
        prev = nxt[:, alive] * 256
        prev_col = np.full(trie.parent[d].size, -1, dtype=np.int64)
        prev_col[kids[alive]] = np.arange(alive.size)
    return out


@dataclass(frozen=True)
class TokenSteps:
    """How the token build finds the token classes and their edges, and token distances: the references of
    this file (numpy: no import) or token_walk_numba.py's compiled twins (the same arrays; numba loaded
    already by a byte automaton of that size)."""

    # (delta, trie, V) -> class of each token [V] (classes in the order of their first token), edge source,
    # class and destination [E] sorted by (source, class): `dense_classes`
    classes: Callable[[np.ndarray, _Trie, int], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    bfs: Callable[[np.ndarray, np.ndarray, int, np.ndarray], np.ndarray]  # `_bfs`


def compiled_token_steps() -> TokenSteps:
    from constraints.token_walk_numba import bfs, preorder_trie, sparse_classes

    return TokenSteps(lambda d, t, V: sparse_classes(d, preorder_trie(t.parent, t.byte, t.ends), V), bfs)


def token_steps_for(n_b: int) -> TokenSteps:
    """The token steps for a byte automaton of n_b states: byte_automaton.py's one rule (`compiled_at`)."""
    return compiled_token_steps() if compiled_at(n_b) else REFERENCE_TOKEN_STEPS


def build_token_dfa(
    regex: str, vocab: list[bytes | None], eos_ids, *, trie: _Trie | None = None
) -> TokenDFA:
    """Compile `regex` against the byte vocabulary (index = token id); `eos_ids` lead from final to DONE."""
    delta, final_b = byte_dfa(regex)
    n_b, V = delta.shape[0] - 1, len(vocab)
    trie = trie or build_trie(vocab)
    steps = token_steps_for(n_b)
    inverse, src, cls, dst = steps.classes(delta, trie, V)  # [V]; [E] by (source, class)
    # trim to states reachable from the start and co-reachable by whole tokens
    reach = steps.bfs(src, dst, n_b, np.asarray([0])) >= 0
    dist_b = steps.bfs(dst, src, n_b, np.nonzero(final_b)[0])  # fewest tokens to a final state, -1: none
    keep = reach & (dist_b >= 0)
    if not keep[0]:
        raise ValueError("no token sequence of this vocabulary spells a string matching the constraint")
    renum = np.full(n_b, -1, dtype=np.int64)
    renum[keep] = np.arange(int(keep.sum()))
    ok = keep[src] & keep[dst]
    # classes: renumber live ones densely (their order kept); dead/special tokens -> -1
    cls_ids = np.full(int(inverse.max()) + 1 if V else 0, -1, dtype=np.int64)
    used = np.unique(cls[ok])
    cls_ids[used] = np.arange(used.size)
    # (a None or empty token is in no trie node, so dead from every state: its class has no edge, hence -1)
    token_class = cls_ids[inverse].astype(np.int32)
    return TokenDFA(
        final=final_b[keep],
        token_class=token_class,
        edge_src=renum[src[ok]].astype(np.int32),
        edge_cls=cls_ids[cls[ok]].astype(np.int32),
        edge_dst=renum[dst[ok]].astype(np.int32),
        dist=dist_b[keep].astype(np.int32),
        eos_ids=np.asarray(sorted(set(int(e) for e in eos_ids)), dtype=np.int64),
    )


def dense_classes(delta: np.ndarray, trie: _Trie, V: int, chunk: int | None = None) -> tuple[np.ndarray, ...]:
    """(class of each token [V], classes numbered in the order of their first token; edge source, class and
    destination [E], sorted by (source, class)): one edge per byte state and class with an allowed token.

    The reference: every token walked from every state, chunk by chunk (`_token_classes`), then the edges
    read off the table of each class's next states."""
    n_b = delta.shape[0] - 1
    # similar states side by side (by how many bytes they allow), so dead trie subtrees prune per chunk
    order = np.argsort((delta[:n_b] < n_b).sum(axis=1), kind="stable")
    # chunks of ~8 MB of next states: measured 2x faster than 64 MB ones (the column grouping stays in cache)
    chunk = chunk or max(64, (1 << 21) // max(V, 1))
    inverse, reps, cols = _token_classes(delta, trie, order, V, chunk)  # [V], [K], [S_b, K]
    rank = np.empty(reps.size, dtype=np.int64)
    rank[np.argsort(reps, kind="stable")] = np.arange(reps.size)  # reps: each class's first token
    flat = np.flatnonzero(cols < n_b)  # row-major: by (source, old class); ~3x faster than a 2-D nonzero
    src, cls = np.divmod(flat, max(cols.shape[1], 1))
    dst = cols.reshape(-1)[flat].astype(np.int64)
    cls = rank[cls]
    by = np.lexsort((cls, src))
    return rank[inverse], src[by], cls[by], dst[by]


def _token_classes(delta, trie: _Trie, order: np.ndarray, V: int, chunk: int) -> tuple[np.ndarray, ...]:
    """(class of each token [V], first token of each class [K], next state of each class [S_b, K]), exactly.

    Per chunk the tokens are grouped by their column of next states (`_column_groups`); a token's class is
    its tuple of groups over the chunks. Only the columns of each group's first token are kept per chunk.
    """
    n_b = delta.shape[0] - 1
    cls = np.zeros(V, dtype=np.int64)
    parts = []
    for lo in range(0, n_b, chunk):
        q = order[lo : lo + chunk]
        nxt = walk(delta, trie, q, V)  # [Q, V]
        group, first = _column_groups(nxt)
        parts.append((q, group, nxt[:, first]))
        _, cls = np.unique(cls * first.size + group, return_inverse=True)
        cls = cls.reshape(-1)
    k = int(cls.max()) + 1 if V else 0
    reps = np.zeros(k, dtype=np.int64)
    reps[cls[::-1]] = np.arange(V - 1, -1, -1)
    cols = np.empty((n_b, k), dtype=np.int32)
    for q, group, sub in parts:
        cols[q] = sub[:, group[reps]]
    return cls, reps, cols


def _propose_groups(nxt: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Columns of `nxt` [Q, V] grouped by their sums under the weights `w` [2, Q] (groups in order of the
    sums, each with its first column), or None where a group holds two different columns."""
    h = w @ nxt.astype(np.float64)  # [2, V]
    _, first, group = np.unique(h[0] + 1j * h[1], return_index=True, return_inverse=True)
    group = group.reshape(-1)
    idx = first[group]
    if not all((row == row[idx]).all() for row in nxt):
        return None
    return group, first


def _column_groups(nxt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group of each column [V], first column of each group) for the columns of `nxt` [Q, V], exactly.

    Two random integer weightings of a column, summed in float64, are exact integers (the weights are small
    enough that no sum passes 2^53), so equal columns always agree; `propose` (`_propose_groups` or its
    compiled twin) groups the columns by these sums and confirms the groups element by element, and a
    collision (different columns, same sums) falls back to an exact sort.
    """
    Q, V = nxt.shape
    bits = 52 - int(np.ceil(np.log2(max(int(nxt.max()), 1) + 1))) - int(np.ceil(np.log2(Q + 1)))
    if bits >= 8:
        w = _weights(bits, Q)
        found = _propose_groups(nxt, w)
        if found is not None:
            return found
    _, first, group = np.unique(nxt, axis=1, return_index=True, return_inverse=True)
    return group.reshape(-1), first


@functools.lru_cache(maxsize=64)
def _weights(bits: int, Q: int) -> np.ndarray:
    """The hash weights of `_column_groups`: float64 [2, Q] integers below 2^bits from a fixed seed, made once
    per (bits, Q) (every full chunk of a build has the same: a generator per chunk cost ~0.3 s over 30 slow
    schemas). Shared by every caller, so never written (left writeable: numba compiles a read-only array as
    another type)."""
    return np.random.default_rng(0x5EED).integers(0, 2**bits, size=(2, Q)).astype(np.float64)


def _bfs(src: np.ndarray, dst: np.ndarray, n: int, sources: np.ndarray) -> np.ndarray:
    """Fewest edges from `sources` to each of n nodes along src -> dst (-1: unreachable), level by level."""
    order = np.argsort(src, kind="stable")
    nbr = dst[order]
    start = np.searchsorted(src[order], np.arange(n + 1))
    dist = np.full(n, -1, dtype=np.int64)
    frontier = np.unique(sources)
    dist[frontier] = 0
    level = 0
    while frontier.size:
        level += 1
        nxt = nbr[csr_ranges(start[frontier], start[frontier + 1])]
        nxt = np.unique(nxt[dist[nxt] < 0])
        dist[nxt] = level
        frontier = nxt
    return dist


REFERENCE_TOKEN_STEPS = TokenSteps(dense_classes, _bfs)


def save_dfa(path, dfa: TokenDFA) -> None:
    """Write `dfa` as .npz atomically (concurrent replicas never read half a file)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp.npz")
    os.close(fd)
    np.savez(tmp, **dfa.arrays())
    os.replace(tmp, path)


def _worker_main(job: str, out: str) -> None:
    """Bounded build used by compile.py: read JOB/input.npz, cap the address space, write OUT."""
    import resource

    with np.load(os.path.join(job, "input.npz"), allow_pickle=False) as z:
        lens, blob, eos = z["lens"], z["blob"].tobytes(), z["eos"].tolist()
        regex, memory = z["regex"].tobytes().decode("utf-8"), int(z["memory"][0])
    vm = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                vm = int(line.split()[1]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + memory, resource.RLIM_INFINITY))
    vocab, pos = [], 0
    for n in lens.tolist():
        vocab.append(None if n < 0 else blob[pos : pos + n])
        pos += max(n, 0)
    t0 = time.perf_counter()
    save_dfa(out, build_token_dfa(regex, vocab, eos))
    print(f"built in {time.perf_counter() - t0:.2f}s", file=sys.stderr)


if __name__ == "__main__":
    _worker_main(sys.argv[1], sys.argv[2])
