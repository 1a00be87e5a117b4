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
# from this many characters on, the compiled scan (budget_numba.py: ~100x faster a character) counts a
# regex: one this long is composed (byte_automaton.py COMPOSE_CHARS), whose build loads numba anyway
COMPILED_CHARS = 10_000


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


def check_size(regex: str, path: str, what: str, written_again: int = 0) -> str:
    """`regex` unchanged, or TooLarge naming `what` at `path` when its automaton would be too big (or its
    text too long: parsing and hashing it is linear in the text, which repeated groups can blow up).
    `written_again`: characters of a group the regex writes a second time (an array's item), which
    composed_dfa.py builds once: they do not count against the text bound."""
    if len(regex) - written_again > MAX_REGEX_CHARS:
        raise TooLarge(
            f"unsupported: {what} too large to compile ({len(regex) - written_again} regex characters, over "
            f"{MAX_REGEX_CHARS}) (at {path})"
        )
    n = estimate_states(regex)
    if n > MAX_STATES:
        raise TooLarge(
            f"unsupported: {what} too large to compile (~{n} automaton states, over {MAX_STATES}) "
            f"(at {path})"
        )
    return regex


# one token of the regex text per match: the scan is a Python loop over tokens, so a run of literal characters
# (most of a schema regex: key names, punctuation) is one step instead of one per character
_TOKEN = re.compile(
    r"(?P<esc>\\x[\s\S]{0,2}|\\[\s\S]?)"
    r"|(?P<cls>\[\^?[\s\S]?(?:\\[\s\S]?|[^\]\\])*)"  # to just before its ']' (the first character is literal)
    r"|(?P<open>\(\?:|\()|(?P<alt>\|)|(?P<close>\))|(?P<quant>[?*+])"
    r"|\{(?P<lo>\d*)(?P<comma>,?)(?P<hi>\d*)\}"
    r"|(?P<lit>[^\\\[()|?*+{]+|\{)"
)
_PREFIX = 128  # characters of a large group's text that index it in the memo below (a large group is longer)
_KEPT_CHARS = 1 << 25  # the memo holds group texts up to this many characters in all, then starts afresh


class _Memo:
    """What was learnt about large groups (over SHARED_CHARS) in earlier scans, by the group's text.

    The nested check_size calls of one schema rescan each part once per enclosing array / object (quadratic
    in the nesting), so a group already scanned is not scanned again when the result is known to be the same:
    `inner` (the large groups inside a text) depends on the text only; `fresh` is the group's count when none
    of its inner groups was counted before it (it was scanned so); `again` its count before the
    1/SHARED_WEIGHT when it was itself counted before (then so were all its inner groups).
    """

    def __init__(self):
        self.inner: dict[str, frozenset[str]] = {}
        self.fresh: dict[str, tuple[int, int]] = {}
        self.again: dict[str, tuple[int, int]] = {}
        self.by_prefix: dict[str, list[str]] = {}
        self.whole: dict[str, int] = {}  # estimate_states by regex text
        self.chars = 0

    def learn(self, text: str, inner: frozenset[str]) -> None:
        if text not in self.inner:
            if self.chars > _KEPT_CHARS:
                self.__init__()
            self.inner[text] = inner
            self.by_prefix.setdefault(text[:_PREFIX], []).append(text)
            self.chars += len(text)

    def group_at(self, regex: str, i: int) -> str | None:
        """The text of the group opening at i when it is known (at most one known text can start there)."""
        for text in self.by_prefix.get(regex[i : i + _PREFIX], ()):
            if regex.startswith(text, i):
                return text
        return None


_MEMO = _Memo()


def estimate_states(regex: str) -> int:
    """Rough byte-automaton state count of `regex` (Rust regex syntax as regex_atoms.py writes it).

    A large group written again (object_body writes each optional field twice, a $ref target is written at
    each use) counts only 1/SHARED_WEIGHT of its states after the first time: composed_dfa.py builds it once
    and copies its minimal automaton, which is much smaller than the text's count. Copies a counted
    repetition makes are real (each counts its place), so they count in full. Memoised (`_Memo`); from
    COMPILED_CHARS characters on, scanned by the compiled twin (the same count).
    """
    n = _MEMO.whole.get(regex)
    if n is None:
        n = _compiled_estimate(regex) if len(regex) >= COMPILED_CHARS else None
        if n is None:  # short, or a count past int64 (budget_numba.py): the scan in Python integers
            n = _estimate(regex, _MEMO)
        _MEMO.whole[regex] = n
        _MEMO.chars += len(regex)
    return n


def _compiled_estimate(regex: str) -> int | None:
    """budget_numba.py's `estimate` (None where it leaves the count to `_estimate`)."""
    from constraints.budget_numba import estimate

    return estimate(regex, SHARED_CHARS, SHARED_WEIGHT, UTF_8_STATES)


class _Frame:
    """An open group: sizes of its alternatives ([shared-aware, full], the last one open), where it opened,
    the `seen` order then, the earliest order of a counted-before group inside it, and its large groups."""

    __slots__ = ("alts", "start", "order", "first_hit", "inner")

    def __init__(self, start: int, order: int):
        self.alts = [[0, 0]]
        self.start, self.order, self.first_hit = start, order, order
        self.inner: set[str] = set()


def _estimate(regex: str, memo: _Memo) -> int:
    seen: dict[str, int] = {}  # texts of the large groups already counted -> order they were counted in
    stack = [_Frame(0, 0)]
    last = [0, 0]  # size of the atom just read, for a quantifier that follows it
    cur = stack[-1].alts[-1]  # the open alternative atoms are added to
    i, n = 0, len(regex)
    while i < n:
        m = _TOKEN.match(regex, i)
        kind = m.lastgroup
        if kind == "lit":  # k literal bytes: one state each; the last is the atom a quantifier repeats
            k = m.end() - i
            cur[0] += k
            cur[1] += k
            last = [1, 1]
            i = m.end()
        elif kind == "esc":
            cur[0] += 1
            cur[1] += 1
            last = [1, 1]
            i = m.end()
        elif kind == "cls":
            body = regex[i + 1 : m.end()]
            k = 1 + (UTF_8_STATES if body.startswith("^") or not body.isascii() else 0)
            cur[0] += k
            cur[1] += k
            last = [k, k]
            i = m.end() + 1  # past the ']'
        elif kind == "open":
            text = memo.group_at(regex, i) if n - i > SHARED_CHARS else None
            known = None
            if text is not None:
                inner = memo.inner[text]
                if text in seen and text in memo.again:
                    s, f = memo.again[text]
                    known = [s // SHARED_WEIGHT + 1, f]
                    top = stack[-1]
                    top.first_hit = min(top.first_hit, seen[text])
                elif text not in seen and text in memo.fresh and seen.keys().isdisjoint(inner):
                    known = list(memo.fresh[text])
                    order = len(seen)
                    for t in inner:
                        seen[t] = order
                    seen[text] = order
            if known is not None:  # the group as counted before, read in one step
                stack[-1].inner.update(inner)
                stack[-1].inner.add(text)
                last = known
                cur[0] += known[0]
                cur[1] += known[1]
                i += len(text)
                continue
            stack.append(_Frame(i, len(seen)))
            cur = stack[-1].alts[-1]
            i = m.end()
        elif kind == "alt":
            stack[-1].alts.append([0, 0])
            cur = stack[-1].alts[-1]
            i += 1
        elif kind == "close":
            fr = stack.pop()
            last = [sum(a[0] for a in fr.alts), sum(a[1] for a in fr.alts)]
            top = stack[-1]
            if i - fr.start > SHARED_CHARS:  # composed_dfa.py builds a repeated large group once
                text = regex[fr.start : i + 1]
                memo.learn(text, frozenset(fr.inner))
                if text in seen:
                    memo.again[text] = (last[0], last[1])
                    fr.first_hit = min(fr.first_hit, seen[text])
                    last[0] = last[0] // SHARED_WEIGHT + 1
                else:
                    if fr.first_hit >= fr.order:  # nothing inside was counted before it: its fresh count
                        memo.fresh[text] = (last[0], last[1])
                    seen[text] = len(seen)
                top.inner.update(fr.inner)
                top.inner.add(text)
            top.first_hit = min(top.first_hit, fr.first_hit)
            cur = top.alts[-1]
            cur[0] += last[0]
            cur[1] += last[1]
            i += 1
        elif kind == "quant":
            i += 1  # optional or looped: the body's states are already counted once
        else:  # a counted repetition {m,n}: max(m, n, 1) copies of the atom before it
            lo, hi = int(m.group("lo") or 0), m.group("hi")
            times = max(lo, int(hi) if hi else lo + 1, 1)
            cur[0] += last[1] * (times - 1)
            cur[1] += last[1] * (times - 1)
            i = m.end()
    while len(stack) > 1:  # unbalanced input: count what was read
        alts = stack.pop().alts
        stack[-1].alts[-1][0] += sum(a[0] for a in alts)
        stack[-1].alts[-1][1] += sum(a[1] for a in alts)
    return sum(a[0] for a in stack[0].alts)
