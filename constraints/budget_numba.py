"""Compiled (numba) twin of budget.py's state estimate: one pass over the regex's characters.

Legend: n characters of the regex, D groups open at once (at most the number of "(" + 1).

budget.py's `_estimate` reads a token at a time in Python (~2 us each) and remembers large groups across
calls (`_Memo`), so that the nested `check_size` calls of one schema (each array / object checked as it is
built, then again inside every enclosing one) do not rescan what they hold; the scan was still about half
of translating a large recursive schema (WashingtonPost's, ~1 s each: 120 scans of up to 1.8M characters).
Here the plain scan (tests/constraints/test_automaton_numba.py `_reference_estimate`, the oracle both are
compared with) runs compiled, over the characters as integers:

- a group's states are the sum over its alternatives, so one running (shared-aware, full) pair per open
  group stands for its alternatives;
- "a large group already counted in this scan" is found in an open-addressing table of the groups' texts,
  keyed by a polynomial hash of the text (prefix hashes, mod 2^64) and confirmed character by character,
  so a collision never merges two texts; a large group inside is confirmed by its id (its slot: the same
  slot, the same text), so nested copies are not read again at every level (wp_98's 1.8M characters:
  32 ms -> 9 ms).

`estimate` returns None where the exact count leaves int64 (nested counted repetitions past 2^62) or the
regex closes a group it never opened: budget.py's scan (Python integers) then decides.
"""

from __future__ import annotations

import numpy as np

from constraints.automaton_numba import _jit

_LIMIT = 1 << 62  # counts past this could overflow int64 in the next product: left to the Python scan


def estimate(regex: str, shared_chars: int, shared_weight: int, utf_8_states: int) -> int | None:
    """budget.py's `estimate_states` of `regex` (the same count, budget.py's constants passed in), or None
    (see the module docstring)."""
    if regex.isascii():  # one byte a character: the text's own buffer, no copy
        codes = np.frombuffer(regex.encode("ascii"), dtype=np.uint8)
    else:  # one code point a character (positions are counted in characters)
        codes = np.frombuffer(regex.encode("utf-32-le"), dtype=np.uint32)
    n = int(_estimate_kernel(codes, shared_chars, shared_weight, utf_8_states))
    return None if n < 0 else n


@_jit
def _power(base, e):  # pragma: no cover - compiled
    out = np.uint64(1)
    while e > 0:
        if e & 1:
            out *= base
        base *= base
        e >>= 1
    return out


@_jit
def _same_text(c, a, b, length, gid_at, glen_at):  # pragma: no cover - compiled
    # character by character, but a large group inside both at the same offset is compared by its id (the
    # same id: the same text), so that each comparison reads its own level only (nested large groups);
    # from the second character: the first is "(" in both, and a's own id stands at a
    k = 1
    while k < length:
        g = gid_at[a + k]
        if g >= 0:
            if gid_at[b + k] != g:
                return False
            k += glen_at[a + k]
        else:
            if c[a + k] != c[b + k] or gid_at[b + k] >= 0:
                return False
            k += 1
    return True


@_jit
def _estimate_kernel(c, shared_chars, shared_weight, utf_8_states):  # pragma: no cover - compiled
    n = c.size
    opens = 0
    for k in range(n):
        if c[k] == 40:  # "("
            opens += 1
    # prefix hashes of the text: hash(c[a:b]) = h[b] - h[a] * base^(b - a) (mod 2^64)
    h = np.empty(n + 1, dtype=np.uint64)
    h[0] = 0
    base = np.uint64(1_000_003)
    for k in range(n):
        h[k + 1] = h[k] * base + np.uint64(c[k]) + np.uint64(1)
    cap = 16
    while cap < 2 * opens + 2:
        cap *= 2
    t_start = np.full(cap, -1, dtype=np.int64)  # the large group texts counted so far: first start, length
    t_len = np.zeros(cap, dtype=np.int64)
    t_hash = np.zeros(cap, dtype=np.uint64)
    # the id (table slot) and length of the large group starting here (int32: the arrays are the memory)
    gid_at = np.full(n + 1, -1, dtype=np.int32)
    glen_at = np.zeros(n + 1, dtype=np.int32)
    sd = np.zeros(opens + 1, dtype=np.int64)  # per open group: states (shared-aware), states (full), start
    sf = np.zeros(opens + 1, dtype=np.int64)
    st = np.zeros(opens + 1, dtype=np.int64)
    top = 0
    last_d, last_f = 0, 0
    i = 0
    while i < n:
        ch = c[i]
        if ch == 92:  # "\\": an escape, \xHH four characters
            i = i + 4 if i + 1 < n and c[i + 1] == 120 else i + 2
            sd[top] += 1
            sf[top] += 1
            last_d, last_f = 1, 1
        elif ch == 91:  # "[": to its "]" (the first character, after a "^", is literal)
            j = i + 1
            neg = j < n and c[j] == 94
            if neg:
                j += 1
            j += 1
            while j < n and c[j] != 93:
                j += 2 if c[j] == 92 else 1
            wide = neg
            for k in range(i + 1, min(j, n)):
                if c[k] > 127:
                    wide = True
            k = 1 + (utf_8_states if wide else 0)
            sd[top] += k
            sf[top] += k
            last_d, last_f = k, k
            i = j + 1
        elif ch == 40:  # "("
            top += 1
            sd[top], sf[top], st[top] = 0, 0, i
            i += 3 if i + 2 < n and c[i + 1] == 63 and c[i + 2] == 58 else 1
        elif ch == 124:  # "|": the group's alternatives are summed: nothing to open
            i += 1
        elif ch == 41:  # ")"
            if top == 0:
                return -1
            start = st[top]
            last_d, last_f = sd[top], sf[top]
            top -= 1
            if i - start > shared_chars:  # a large group: counted again, it is a fraction of its states
                length = i + 1 - start
                key = h[i + 1] - h[start] * _power(base, length)
                slot = np.int64(key & np.uint64(cap - 1))
                while True:
                    if t_start[slot] < 0:
                        t_start[slot], t_len[slot], t_hash[slot] = start, length, key
                        break
                    if t_hash[slot] == key and t_len[slot] == length:
                        if _same_text(c, t_start[slot], start, length, gid_at, glen_at):
                            last_d = last_d // shared_weight + 1
                            break
                    slot = (slot + 1) & (cap - 1)
                gid_at[start], glen_at[start] = slot, length
            sd[top] += last_d
            sf[top] += last_f
            if sf[top] > _LIMIT:
                return -1
            i += 1
        elif ch == 63 or ch == 42 or ch == 43:  # "?", "*", "+": the body is counted once already
            i += 1
        else:
            counted = False
            if ch == 123:  # "{": a counted repetition {lo}, {lo,}, {lo,hi}, {,hi}, {,}; else a literal
                j = i + 1
                lo, lo_digits = 0, 0
                while j < n and 48 <= c[j] <= 57:
                    lo = lo * 10 + (c[j] - 48)
                    lo_digits += 1
                    j += 1
                if j < n and c[j] == 44:
                    j += 1
                hi, hi_digits = 0, 0
                while j < n and 48 <= c[j] <= 57:
                    hi = hi * 10 + (c[j] - 48)
                    hi_digits += 1
                    j += 1
                if j < n and c[j] > 127:  # Python's \d also reads other scripts' digits: its scan decides
                    return -1
                if lo_digits > 18 or hi_digits > 18:  # a count past int64: its scan decides
                    return -1
                if j < n and c[j] == 125:
                    times = max(lo, hi if hi_digits else lo + 1, 1)
                    if last_f > 0 and times - 1 > _LIMIT // last_f:
                        return -1
                    sd[top] += last_f * (times - 1)
                    sf[top] += last_f * (times - 1)
                    if sd[top] > _LIMIT or sf[top] > _LIMIT:
                        return -1
                    i = j + 1
                    counted = True
            if not counted:  # a literal character: one state
                sd[top] += 1
                sf[top] += 1
                last_d, last_f = 1, 1
                i += 1
    while top > 0:  # unbalanced input: count what was read
        sd[top - 1] += sd[top]
        sf[top - 1] += sf[top]
        top -= 1
    return sd[0]
