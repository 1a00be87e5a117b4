"""Compile-time bounds of the schema translation: string and array length caps, and an automaton size guard.

A counted repetition `X{lo,hi}` becomes about hi copies of X's states in the byte automaton, and the compile
time grows with those states (byte_automaton.py / composed_dfa.py determinise and minimise them; dfa.py then
walks every vocabulary token from every minimal state). A schema's maxLength of 4,096 (common in Snowplow)
would cost seconds while the generation budget (1,024 tokens by default) could never fill it anyway. So:

- maxLength / maxItems are capped (STRING_CAP / ITEMS_CAP). Shorter strings and arrays still satisfy the
  maximum, so the language shrinks and stays valid; minLength / minItems are never lowered (that would admit
  invalid values), and a minimum past MAX_MIN_LENGTH / MAX_MIN_ITEMS is refused naming the keyword.
- `check_size` estimates the byte automaton's states from a regex (counted repetitions multiply their body)
  and refuses a part over MAX_STATES, naming the schema pointer of the array / object that blew up, instead
  of letting the compile run into its timeout.

The estimate is an upper-bound-style count over the regex text: each literal byte or ASCII class is one
state, a class that admits non-ASCII characters is UTF_8_STATES (its UTF-8 continuation states), and
`{m,n}` multiplies by max(m, n, 1); a large group written again counts a fraction (composed_dfa.py builds
it once). Measured with the guard off on bench/schema_splits.py's 20-per-split sample (shipped 3,072-token
tokenizer, 2-core box, CPU time, 2026-12-07): all but one sample schema estimate under 40k states and compile
in at most 2.5 s (most under 1 s) but for two unions of similar objects (3.2 and 4.4 s: product states). The
costliest shape per estimated state is a flat object of many optional bounded strings (each character of each
string is ~9 byte states, UTF-8 included): 40 of maxLength 64 estimate 56k states and compile in 1.4 s, 80
estimate 114k in 4.3 s, the remaining sample schema (Snowplow, 125k) 7.3 s.
"""

from __future__ import annotations

import re

from constraints.schema_errors import UnsupportedSchema

STRING_CAP = 64  # characters generated at most for a bounded string (maxLength above this is capped)
MAX_MIN_LENGTH = 1024  # minLength above this is refused: the generation budget cannot hold the string
ITEMS_CAP = 16  # items generated at most for an array with maxItems above this
MAX_MIN_ITEMS = 256  # minItems above this is refused
MAX_STATES = 120_000  # estimated byte-automaton states one array / object may expand to (<~5 s to compile)
MAX_REGEX_CHARS = 1_500_000  # regex text of one array / object (a 954k-character one compiles in ~5 s)
UTF_8_STATES = 8  # extra byte states of one character class that admits multi-byte UTF-8 characters
SHARED_CHARS = 200  # a group this long written again counts 1/SHARED_WEIGHT of its states the next times
SHARED_WEIGHT = 8


def cap_length(lo: int, hi: int | None, path: str) -> int | None:
    """maxLength to generate: at most STRING_CAP but never under minLength (a sound restriction)."""
    if lo > MAX_MIN_LENGTH:
        raise UnsupportedSchema(
            f"unsupported: minLength {lo} over the generation budget of {MAX_MIN_LENGTH} (at {path})"
        )
    return None if hi is None else max(lo, min(int(hi), STRING_CAP))


def cap_items(lo: int, hi: int | None, path: str) -> int | None:
    """maxItems to generate: at most ITEMS_CAP but never under minItems (a sound restriction)."""
    if lo > MAX_MIN_ITEMS:
        raise UnsupportedSchema(
            f"unsupported: minItems {lo} over the generation budget of {MAX_MIN_ITEMS} (at {path})"
        )
    return None if hi is None else max(lo, min(int(hi), ITEMS_CAP))


class TooLarge(UnsupportedSchema):
    """An object or array whose automaton would be over MAX_STATES. The translation sets `recursive` when it
    had unrolled a recursive $ref: then constraints/refs.py `unroll` tries a smaller depth."""

    recursive = False


def check_size(regex: str, path: str, what: str) -> str:
    """`regex` unchanged, or TooLarge naming `what` at `path` when its automaton would be too big (or its
    text too long: parsing and hashing it is linear in the text, which repeated groups can blow up)."""
    if len(regex) > MAX_REGEX_CHARS:
        raise TooLarge(
            f"unsupported: {what} too large to compile ({len(regex)} regex characters, over "
            f"{MAX_REGEX_CHARS}) (at {path})"
        )
    n = estimate_states(regex)
    if n > MAX_STATES:
        raise TooLarge(
            f"unsupported: {what} too large to compile (~{n} automaton states, over {MAX_STATES}) "
            f"(at {path})"
        )
    return regex


_COUNT = re.compile(r"\{(\d*)(,?)(\d*)\}")


def estimate_states(regex: str) -> int:
    """Rough byte-automaton state count of `regex` (Rust regex syntax as regex_atoms.py writes it).

    A large group written again (object_body writes each optional field twice, a $ref target is written at
    each use) counts only 1/SHARED_WEIGHT of its states after the first time: composed_dfa.py builds it once
    and copies its minimal automaton, which is much smaller than the text's count. Copies a counted
    repetition makes are real (each counts its place), so they count in full.
    """
    # per open group, the sizes of its alternatives (the last one is open): [shared-aware, full] each
    stack: list[list[list[int]]] = [[[0, 0]]]
    opened: list[int] = []  # index of each open group's '('
    seen: set[str] = set()  # texts of the large groups already counted
    last = [0, 0]  # size of the atom just read, for a quantifier that follows it

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
            j += 1  # a ']' right after '[' or '[^' is a literal
            while j < n and regex[j] != "]":
                j += 2 if regex[j] == "\\" else 1
            body = regex[i + 1 : j]
            k = 1 + (UTF_8_STATES if body.startswith("^") or any(ord(c) > 127 for c in body) else 0)
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
            if i - start > SHARED_CHARS:  # composed_dfa.py builds a repeated large group once
                text = regex[start : i + 1]
                if text in seen:
                    last[0] = last[0] // SHARED_WEIGHT + 1
                seen.add(text)
            add(*last)
            i += 1
            continue
        if ch in "?*+":
            i += 1
            continue  # optional or looped: the body's states are already counted once
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
    while len(stack) > 1:  # unbalanced input: count what was read
        alts = stack.pop()
        add(sum(a[0] for a in alts), sum(a[1] for a in alts))
    return sum(a[0] for a in stack[0])
