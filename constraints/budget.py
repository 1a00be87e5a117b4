"""Compile-time bounds of the schema translation: string and array length caps, and an automaton size guard.

A counted repetition `X{lo,hi}` becomes about hi copies of X's states in the byte automaton, and the token
automaton's build time grows with those states (dfa.py walks every vocabulary token from every state). A
schema's maxLength of 4,096 (common in Snowplow) therefore costs minutes while the generation budget
(1,024 tokens by default) could never fill it anyway. So:

- maxLength / maxItems are capped (STRING_CAP / ITEMS_CAP). Shorter strings and arrays still satisfy the
  maximum, so the language shrinks and stays valid; minLength / minItems are never lowered (that would admit
  invalid values), and a minimum past MAX_MIN_LENGTH / MAX_MIN_ITEMS is refused naming the keyword.
- `check_size` estimates the byte automaton's states from a regex (counted repetitions multiply their body)
  and refuses a part over MAX_STATES, naming the schema pointer of the array / object that blew up, instead
  of letting the compile run into its timeout.

The estimate is an upper-bound-style count over the regex text: each literal byte or ASCII class is one
state, a class that admits non-ASCII characters is UTF_8_STATES (its UTF-8 continuation states), and
`{m,n}` multiplies by max(m, n, 1). Measured (shipped 3,072-token tokenizer, 2-core box, 2026-12-07): a
string of maxLength 1,024 is ~9,200 byte states and 1.8 s to build; time grows linearly with states.
"""

from __future__ import annotations

import re

from constraints.schema_errors import UnsupportedSchema

STRING_CAP = 64  # characters generated at most for a bounded string (maxLength above this is capped)
MAX_MIN_LENGTH = 1024  # minLength above this is refused: the generation budget cannot hold the string
ITEMS_CAP = 16  # items generated at most for an array with maxItems above this
MAX_MIN_ITEMS = 256  # minItems above this is refused
MAX_STATES = 30_000  # estimated byte-automaton states one array / object may expand to
UTF_8_STATES = 8  # extra byte states of one character class that admits multi-byte UTF-8 characters


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
    """`regex` unchanged, or TooLarge naming `what` at `path` when its automaton would be too big."""
    n = estimate_states(regex)
    if n > MAX_STATES:
        raise TooLarge(
            f"unsupported: {what} too large to compile (~{n} automaton states, over {MAX_STATES}) "
            f"(at {path})"
        )
    return regex


_COUNT = re.compile(r"\{(\d*)(,?)(\d*)\}")


def estimate_states(regex: str) -> int:
    """Rough byte-automaton state count of `regex` (Rust regex syntax as regex_atoms.py writes it)."""
    stack: list[list[int]] = [[0]]  # per open group: the sizes of its alternatives (the last one is open)
    last = 0  # size of the atom just read, for a quantifier that follows it
    i, n = 0, len(regex)
    while i < n:
        ch = regex[i]
        if ch == "\\":
            i, last = i + 2, 1
            if regex[i - 1 : i] == "x":
                i += 2
            stack[-1][-1] += 1
            continue
        if ch == "[":
            j = i + 1
            if j < n and regex[j] == "^":
                j += 1
            j += 1  # a ']' right after '[' or '[^' is a literal
            while j < n and regex[j] != "]":
                j += 2 if regex[j] == "\\" else 1
            body = regex[i + 1 : j]
            last = 1 + (UTF_8_STATES if body.startswith("^") or any(ord(c) > 127 for c in body) else 0)
            stack[-1][-1] += last
            i = j + 1
            continue
        if ch == "(":
            stack.append([0])
            i += 3 if regex.startswith("(?:", i) else 1
            continue
        if ch == "|":
            stack[-1].append(0)
            i += 1
            continue
        if ch == ")":
            last = sum(stack.pop())
            stack[-1][-1] += last
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
                stack[-1][-1] += last * (times - 1)
                i = m.end()
                continue
        stack[-1][-1] += 1
        last = 1
        i += 1
    while len(stack) > 1:  # unbalanced input: count what was read
        inner = sum(stack.pop())
        stack[-1][-1] += inner
    return sum(stack[0])
