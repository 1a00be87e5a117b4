"""regex + byte vocabulary -> token-level DFA in token classes, with distances to acceptance.

Legend: S live DFA states (0 is the start), V vocabulary, K token classes, E class edges, Q a chunk of states.

How: outlines-core builds the regex's byte-level automaton (an Index over the 256 one-byte tokens; its
transitions are the byte DFA with dead and non-completable moves already removed). We then walk every
vocabulary token from every state ourselves, level by level over a byte trie of the vocabulary and a
chunk of states at a time in numpy, instead of asking outlines-core for the token-level Index: its
`get_transitions()` materialises a dict entry per (state, token) (16.7 GB at V=262k for a large schema),
and walking the trie shares work between tokens with a common prefix.

Tokens whose next-state column is identical from every state form one class; a column is summarised by two
independent 64-bit modular hashes (collision odds ~2^-90 per pair), and each class's edges are then
recomputed exactly from a representative. The DONE state (index S) is added by the DP: final states reach it
on an EOS id and it loops on any token.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from outlines_core import Index, Vocabulary

_BYTE_EOS = 256  # the pseudo-EOS id of the byte-level index


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


def byte_dfa(regex: str) -> tuple[np.ndarray, np.ndarray]:
    """The regex's byte automaton as (delta [S+1, 256] int32 with dead row S, final bool [S]); 0 = start.

    The regex is compiled with an end sentinel byte (\\x00) appended: the engine's alternation is
    leftmost-first, so without it a prefix that already matches (e.g. "tr" in `tr(ue)?`) would cut off its
    longer continuations. A state is final when the sentinel would complete the match there. Only states
    that can still reach a final state are kept (co-reachable), so every live path completes.
    """
    vocab = Vocabulary(_BYTE_EOS, {bytes([b]): [b] for b in range(256)})
    index = Index(f"(?:{regex})\\x00", vocab)
    trans = index.get_transitions()
    init = index.get_initial_state()
    states = set(trans) | {d for m in trans.values() for d in m.values()}
    ids = [init] + sorted(s for s in states if s != init)
    num = {s: i for i, s in enumerate(ids)}
    n = len(ids)
    delta = np.full((n + 1, 256), n, dtype=np.int32)
    for s, m in trans.items():
        row = delta[num[s]]
        for b, d in m.items():
            if b < 256:
                row[b] = num[d]
    accept = np.zeros(n + 1, dtype=bool)
    for s in index.get_final_states():
        if s in num:
            accept[num[s]] = True
    final = accept[delta[:n, 0]]
    # the sentinel itself is not text: drop \x00 moves into states that only end the match
    has_out = np.append((delta[:n] < n).any(axis=1), False)
    delta[:n, 0] = np.where(has_out[delta[:n, 0]] & ~accept[delta[:n, 0]], delta[:n, 0], n)
    # co-reachability: drop states from which no final state is reachable
    live = final.copy()
    rev: list[list[int]] = [[] for _ in range(n)]
    src, _ = np.nonzero(delta[:n] < n)
    for s, d in zip(src.tolist(), delta[:n][delta[:n] < n].tolist()):
        rev[d].append(s)
    todo = deque(np.nonzero(final)[0].tolist())
    while todo:
        d = todo.popleft()
        for s in rev[d]:
            if not live[s]:
                live[s] = True
                todo.append(s)
    if not live[0]:
        raise ValueError("the constraint's regex matches no string")
    delta = np.where(np.append(live, False)[delta], delta, n).astype(np.int32)
    delta[:n][~live] = n
    return delta, final


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


def build_token_dfa(
    regex: str, vocab: list[bytes | None], eos_ids, *, chunk: int | None = None, trie: _Trie | None = None
) -> TokenDFA:
    """Compile `regex` against the byte vocabulary (index = token id); `eos_ids` lead from final to DONE."""
    delta, final_b = byte_dfa(regex)
    n_b, V = delta.shape[0] - 1, len(vocab)
    trie = trie or build_trie(vocab)
    rng = np.random.default_rng(0x5EED)
    w1 = rng.integers(1, 2**63, size=n_b, dtype=np.uint64) | np.uint64(1)
    w2 = rng.integers(1, 2**63, size=n_b, dtype=np.uint64) | np.uint64(1)
    h1 = np.zeros(V, dtype=np.uint64)
    h2 = np.zeros(V, dtype=np.uint64)
    # similar states side by side (by how many bytes they allow), so dead trie subtrees prune per chunk
    order = np.argsort((delta[:n_b] < n_b).sum(axis=1), kind="stable")
    chunk = chunk or max(8, (1 << 24) // max(V, 1))
    with np.errstate(over="ignore"):
        for lo in range(0, n_b, chunk):
            q = order[lo : lo + chunk]
            nxt = walk(delta, trie, q, V).astype(np.uint64)  # [Q, V]
            h1 += w1[q] @ nxt
            h2 += w2[q] @ nxt
    special = np.asarray([not b for b in vocab])
    _, first, inverse = np.unique(np.stack([h1, h2], 1), axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    # exact columns of one representative per class, from every byte state: [S_b, K]
    reps = first.astype(np.int64)
    rep_vocab = [vocab[t] for t in reps]
    cols = walk(delta, build_trie(rep_vocab), np.arange(n_b), len(reps))
    alive_cls = ((cols < n_b).any(axis=0)) & ~special[reps]
    # forward reachability from the start over class edges, then trim to reachable & co-reachable
    src, cls = np.nonzero(cols < n_b)
    keep_edge = alive_cls[cls]
    src, cls = src[keep_edge], cls[keep_edge]
    dst = cols[src, cls]
    reach = np.zeros(n_b, dtype=bool)
    reach[0] = True
    adj: list[list[int]] = [[] for _ in range(n_b)]
    for s, d in set(zip(src.tolist(), dst.tolist())):
        adj[s].append(d)
    todo = deque([0])
    while todo:
        s = todo.popleft()
        for d in adj[s]:
            if not reach[d]:
                reach[d] = True
                todo.append(d)
    dist_b = _distances(adj, final_b)
    keep = reach & (dist_b >= 0)
    if not keep[0]:
        raise ValueError("no token sequence of this vocabulary spells a string matching the constraint")
    renum = np.full(n_b, -1, dtype=np.int64)
    renum[keep] = np.arange(int(keep.sum()))
    ok = keep[src] & keep[dst]
    # classes: renumber live ones densely; dead/special tokens -> -1
    cls_ids = np.full(len(reps), -1, dtype=np.int64)
    used = np.unique(cls[ok])
    cls_ids[used] = np.arange(used.size)
    token_class = cls_ids[inverse].astype(np.int32)
    token_class[special] = -1
    return TokenDFA(
        final=final_b[keep],
        token_class=token_class,
        edge_src=renum[src[ok]].astype(np.int32),
        edge_cls=cls_ids[cls[ok]].astype(np.int32),
        edge_dst=renum[dst[ok]].astype(np.int32),
        dist=dist_b[keep].astype(np.int32),
        eos_ids=np.asarray(sorted(set(int(e) for e in eos_ids)), dtype=np.int64),
    )


def _distances(adj: list[list[int]], final: np.ndarray) -> np.ndarray:
    """Fewest tokens from each state to a final state (-1 if none), by BFS on the reversed graph."""
    n = len(adj)
    rev: list[list[int]] = [[] for _ in range(n)]
    for s, ds in enumerate(adj):
        for d in ds:
            rev[d].append(s)
    dist = np.full(n, -1, dtype=np.int64)
    todo = deque(np.nonzero(final)[0].tolist())
    dist[list(todo)] = 0
    while todo:
        d = todo.popleft()
        for s in rev[d]:
            if dist[s] < 0:
                dist[s] = dist[d] + 1
                todo.append(s)
    return dist


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
