"""Random words of a compiled constraint: walks over its byte automaton or its token automaton.

Used by `dgbatch check-schema --walks N` (jobs/cmd_check_schema.py) and by the soundness tests
(tests/constraints/): every word of the automaton must validate, so sampling many of them, with every
optional key, enum member, alternative and length reachable, is how a translation bug shows up.

Both walks choose uniformly among the moves allowed from the current state (byte values, or token classes
with a uniform token inside the class), stop at a final state with probability `stop_p`, and once the
length budget is used up only take moves that bring a final state strictly closer, so every walk ends.
"""

from __future__ import annotations

import numpy as np

from constraints.dfa import TokenDFA, byte_dfa


def _byte_distances(delta: np.ndarray, final: np.ndarray) -> np.ndarray:
    """Fewest bytes from each state to a final state (Bellman-Ford style relaxation over the table)."""
    S = final.size
    dist = np.where(final, 0, 10**9).astype(np.int64)
    while True:
        ext = np.append(dist, 10**9)
        new = np.minimum(dist, ext[delta[:S]].min(axis=1) + 1)
        if (new == dist).all():
            return dist
        dist = new


def byte_accepts(regex: str, text: str) -> bool:
    """Whether the regex's byte automaton accepts exactly `text` (UTF-8)."""
    return dfa_accepts(*byte_dfa(regex), text)


def dfa_accepts(delta, final, text: str) -> bool:
    """Whether the byte automaton (delta [S, 256], final [S]; next state S = dead) accepts exactly `text`."""
    q = 0
    for b in text.encode("utf-8"):
        q = int(delta[q, b])
        if q >= final.size:
            return False
    return bool(final[q])


def byte_walks(regex: str, n: int, seed: int = 0, max_len: int = 300, stop_p: float = 0.15) -> list[str]:
    """`n` random strings of the regex's language: walks on its byte automaton, steered to finish."""
    delta, final = byte_dfa(regex)
    S = final.size
    dist = _byte_distances(delta, final)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        q, buf = 0, bytearray()
        while True:
            moves = np.nonzero(delta[q] < S)[0]
            if len(buf) > max_len:
                moves = moves[dist[delta[q, moves]] < dist[q]]
            if final[q] and (moves.size == 0 or len(buf) > max_len or rng.random() < stop_p):
                break
            b = int(rng.choice(moves))
            buf.append(b)
            q = delta[q, b]
        out.append(buf.decode("utf-8"))
    return out


def token_walks(
    dfa: TokenDFA,
    vocab: list[bytes | None],
    n: int,
    *,
    budget: int,
    seed: int = 0,
    stop_p: float = 0.1,
) -> list[list[int]]:
    """`n` random token sequences the automaton accepts, each within `budget` tokens (EOS not included).

    A move is taken only when its target can still reach a final state in the tokens left, so a walk never
    runs out of budget (budget below dfa.dist[0] raises ValueError: no word fits).
    """
    if budget < int(dfa.dist[0]):
        raise ValueError(f"token_walks: budget {budget} below the shortest word ({int(dfa.dist[0])} tokens)")
    order = np.argsort(dfa.edge_src, kind="stable")
    src, cls, dst = dfa.edge_src[order], dfa.edge_cls[order], dfa.edge_dst[order]
    starts = np.searchsorted(src, np.arange(dfa.n_states + 1))
    by_class = np.argsort(dfa.token_class, kind="stable")
    cls_starts = np.searchsorted(dfa.token_class[by_class], np.arange(dfa.n_classes + 1))
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        q, toks = 0, []
        while True:
            left = budget - len(toks)
            lo, hi = starts[q], starts[q + 1]
            ok = np.nonzero(dfa.dist[dst[lo:hi]] <= left - 1)[0] if left > 0 else np.zeros(0, dtype=np.int64)
            if dfa.final[q] and (ok.size == 0 or rng.random() < stop_p):
                break
            e = lo + int(rng.choice(ok))
            c = int(cls[e])
            members = by_class[cls_starts[c] : cls_starts[c + 1]]
            toks.append(int(rng.choice(members)))
            q = int(dst[e])
        out.append(toks)
    return out


def decode(tokens: list[int], vocab: list[bytes | None]) -> str:
    """The text of a token sequence (bytes joined, then UTF-8: a character may span tokens)."""
    return b"".join(vocab[t] or b"" for t in tokens).decode("utf-8")
