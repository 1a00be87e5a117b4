"""outlines-core's Index -> its transitions as arrays, read from the Index's own binary form (compiled).

Legend: E transitions of the Index (state, token) -> state, F final states.

byte_automaton.py's `_index_edges` is the reference: `Index.get_transitions()` builds a Python dict per
state and an int object per transition, which the reference then flattens with np.fromiter; on the leaves of
the 77 slowest JSONSchemaBench schemas that was ~20% of the leaves' build, beside outlines-core's own. The
Index pickles as one bytes object (`Index.__reduce__`: the struct encoded by bincode 2's standard
configuration: little-endian varints, https://github.com/bincode-org/bincode/blob/trunk/docs/spec.md) in
the field order of outlines-core's `Index` (src/index.rs: initial_state, final_states, transitions,
eos_token_id, vocab_size); `_decode_kernel` reads it in one pass. The reading is checked, not trusted: it
must consume the bytes exactly and give the Index's initial state, final states and EOS; anything else
(another outlines-core version's layout) returns None and the caller takes the reference.

`leaf_table` goes on to byte_automaton.py's `_trim(*_outlines_dfa(...))` in the same pass (the numbering,
the sentinels, the co-reachable states): a leaf of a composed regex is small, and the dozen numpy steps
of the reference cost more per leaf in calls than in work.

Imported only with the compiled steps (byte_automaton.py `compiled_steps`): numba is loaded then already.
"""

from __future__ import annotations

import numpy as np

from constraints.automaton_numba import _coreachable_kernel, _jit


@_jit
def _varint(buf, pos):  # pragma: no cover - compiled
    """(value, next position) of the varint at pos; value -1 where the bytes end or the tag is not one of
    bincode's (a value below 251, or 251/252/253 then 2/4/8 little-endian bytes)."""
    n = buf.size
    if pos >= n:
        return -1, pos
    tag = np.int64(buf[pos])
    if tag < 251:
        return tag, pos + 1
    width = 2 if tag == 251 else (4 if tag == 252 else (8 if tag == 253 else 0))
    if width == 0 or width == 8 or pos + 1 + width > n:  # u64 state ids or tokens: not ours
        return -1, pos
    v = np.int64(0)
    for k in range(width):
        v |= np.int64(buf[pos + 1 + k]) << (8 * k)
    return v, pos + 1 + width


@_jit
def _decode_kernel(buf, src, tok, dst, fin):  # pragma: no cover - compiled
    """Fill src/tok/dst and fin (their capacity checked); returns (initial state,
    transitions, finals, eos, vocab size, position reached), -1 in the first where the reading failed."""
    bad = (np.int64(-1), np.int64(0), np.int64(0), np.int64(0), np.int64(0), np.int64(0))
    init, pos = _varint(buf, 0)
    n_fin, pos = _varint(buf, pos)
    if init < 0 or n_fin < 0 or n_fin > fin.size:
        return bad
    for i in range(n_fin):
        f, pos = _varint(buf, pos)
        if f < 0:
            return bad
        fin[i] = f
    n_src, pos = _varint(buf, pos)
    if n_src < 0:
        return bad
    e = 0
    for _ in range(n_src):
        s, pos = _varint(buf, pos)
        k, pos = _varint(buf, pos)
        if s < 0 or k < 0 or e + k > src.size:
            return bad
        for _ in range(k):
            t, pos = _varint(buf, pos)
            d, pos = _varint(buf, pos)
            if t < 0 or d < 0:
                return bad
            src[e] = s
            tok[e] = t
            dst[e] = d
            e += 1
    eos, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return init, np.int64(e), n_fin, eos, size, np.int64(pos)


def decode_index(index, eos: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(source state, token, target state) int64 [E] of every transition of `index` (an outlines-core Index
    whose EOS id is `eos`), or None where its binary form is not the layout read here."""
    reduced = index.__reduce__()
    blob = reduced[1][0] if len(reduced) > 1 and reduced[1] else None
    if not isinstance(blob, bytes):
        return None
    buf = np.frombuffer(blob, dtype=np.uint8)
    cap = buf.size // 2 + 1  # a transition is two varints, a byte or more each
    src = np.empty(cap, dtype=np.int64)
    tok = np.empty(cap, dtype=np.int64)
    dst = np.empty(cap, dtype=np.int64)
    fin = np.empty(buf.size, dtype=np.int64)
    init, e, n_fin, got_eos, size, pos = _decode_kernel(buf, src, tok, dst, fin)
    if init < 0 or pos != buf.size or got_eos != eos or size <= 0 or init != index.get_initial_state():
        return None
    if set(fin[:n_fin].tolist()) != set(index.get_final_states()):
        return None
    return src[:e], tok[:e], dst[:e]


@_jit
def _leaf_kernel(src, tok, dst, pre, fins, trim):  # pragma: no cover - compiled
    """The steps of byte_automaton.py's `_outlines_dfa` then (`trim`) of `_trim`, on the decoded transitions:
    (delta [m+1, 256] int32, final [m]), or an empty final where the start is not co-reachable."""
    E = src.size
    top = 0
    for e in range(E):
        top = max(top, src[e] + 1, dst[e] + 1)
    init = -1
    for e in range(E):
        if src[e] == pre and tok[e] == 1:
            init = dst[e]
    top = max(top, init + 1)
    # dense numbering: the start (after \x01) first, then the engine's ids ascending
    seen = np.zeros(top, dtype=np.bool_)
    for e in range(E):
        seen[src[e]] = True
        seen[dst[e]] = True
    seen[init] = False
    num = np.zeros(top, dtype=np.int64)
    n = 1
    for i in range(top):
        if seen[i]:
            num[i] = n
            n += 1
    delta = np.full((n + 1, 256), n, dtype=np.int32)
    for e in range(E):
        if tok[e] < 256:  # the EOS pseudo-token is not text
            delta[num[src[e]], tok[e]] = num[dst[e]]
    delta[num[pre], :] = n  # the state before \x01 is not ours
    accept = np.zeros(n + 1, dtype=np.bool_)
    for f in fins:
        if f < top and (seen[f] or f == init):
            accept[num[f]] = True
    final = np.empty(n, dtype=np.bool_)
    has_out = np.zeros(n + 1, dtype=np.bool_)
    for s in range(n):
        final[s] = accept[delta[s, 0]]
        for b in range(256):
            if delta[s, b] < n:
                has_out[s] = True
                break
    for s in range(n):  # the sentinel \x00 is not text: drop its moves into states that only end the match
        t = delta[s, 0]
        if not (has_out[t] and not accept[t]):
            delta[s, 0] = n
    if not trim:
        return delta, final
    live = _coreachable_kernel(delta, final)
    if not live[0]:
        return delta[:0], final[:0]
    renum = np.empty(n + 1, dtype=np.int32)
    m = 0
    for s in range(n):
        if live[s]:
            renum[s] = m
            m += 1
    for s in range(n):
        if not live[s]:
            renum[s] = m
    renum[n] = m
    out = np.empty((m + 1, 256), dtype=np.int32)
    fin = np.empty(m, dtype=np.bool_)
    for s in range(n):
        if live[s]:
            r = renum[s]
            fin[r] = final[s]
            for b in range(256):
                out[r, b] = renum[delta[s, b]]
    out[m, :] = m
    return out, fin


def leaf_table(index, eos: int, trim: bool = True) -> tuple[np.ndarray, np.ndarray] | None:
    """byte_automaton.py's `_trim(*_outlines_dfa(regex))` (`_outlines_dfa(regex)` if not `trim`) of the
    Index of \\x01 `regex` \\x00 (EOS id `eos`), the same table; None where `decode_index` cannot read it.
    ValueError where the regex matches no string (when trimming)."""
    edges = decode_index(index, eos)
    if edges is None:
        return None
    fins = np.fromiter(index.get_final_states(), dtype=np.int64)
    delta, final = _leaf_kernel(*edges, np.int64(index.get_initial_state()), fins, trim)
    if trim and final.size == 0:
        raise ValueError("the constraint's regex matches no string")
    return delta, final
