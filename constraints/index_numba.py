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

Imported only with the compiled steps (byte_automaton.py `compiled_steps`): numba is loaded then already.
"""

from __future__ import annotations

import numpy as np

from constraints.automaton_numba import _jit


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
