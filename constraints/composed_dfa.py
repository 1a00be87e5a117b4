"""Byte automaton of a large regex, composed from the minimal automata of its parts.

Why: outlines-core determinises a whole regex at once, and our schema regexes repeat subexpressions (each
optional field of an object is written twice by regex_atoms.object_body, a $ref target once per use), so
nested objects multiply: 2^depth copies, which byte_automaton.py then minimises away after paying for them
(and past ~80 nested optional fields outlines-core refuses the regex outright: its parser's nesting limit).
Here every large group the regex writes more than once is compiled once (memoised by its text) and minimised
before it is embedded, so the automata built stay near their minimal size; small parts (leaves) are still
compiled by outlines-core, through byte_automaton.py's `leaf` function handed in.

How: only the group structure of large parts is parsed (groups, alternation, quantifiers); a leaf's text is
left whole to outlines-core. A large part becomes an NFA whose pieces are copies of the DFAs of its leaves and
of its repeated large groups, joined by epsilon links in Glushkov style (from the exits of one piece to the
entries of the next), then determinised by subset construction (piece_nfa.py: the NFA and its
determinisation). The language is the plain regular language of the regex, as byte_automaton.py reads
outlines-core's automaton with its end sentinel. Regexes with flags, anchors or word boundaries are not
composed (`Opaque`): their meaning depends on context a leaf does not see.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

from constraints.piece_nfa import Dfa, Nfa, determinise

LEAF_CHARS = 2_000  # a part this short is one leaf, compiled by outlines-core as a whole
COUNTED = 8  # a group repeated up to this many times or more is a leaf of its own (shared by all its uses)

_SPECIAL = re.compile(r"\\.|[\[\]()^$]", re.S)
_ESCAPE = re.compile(
    r"\\(?:[xuU]\{[0-9A-Fa-f]+\}|x[0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|[pP]\{[^}]*\}|[pP][A-Za-z]|.)",
    re.S,
)
_QUANT = re.compile(r"(?:[?*+]|\{(\d+)(?:(,)(\d*))?\})\??")


class Opaque(ValueError):
    """The regex uses a construct whose meaning a separately compiled part would change (flags, anchors)."""


class _Regex:
    """The regex's group and class spans, from one scan of its special characters."""

    def __init__(self, text: str):
        self.text = text
        self.close: dict[int, int] = {}  # index of '(' -> index of its ')'
        self.class_end: dict[int, int] = {}  # index of an outermost '[' -> index just past its ']'
        stack: list[int] = []
        cls: list[int] = []  # open classes (Rust classes nest)
        self.depth = 0  # deepest group nesting
        for m in _SPECIAL.finditer(text):
            tok, i = m.group(), m.start()
            if tok[0] == "\\":
                if not cls and tok[1:] in ("b", "B", "A", "z"):
                    raise Opaque(f"word boundary or anchor {tok!r}")
                continue
            if cls:
                if tok == "[":
                    cls.append(i)
                elif tok == "]" and i != cls[-1] + 1 and not (i == cls[-1] + 2 and text[i - 1] == "^"):
                    start = cls.pop()
                    if not cls:
                        self.class_end[start] = i + 1
                continue
            if tok == "[":
                cls.append(i)
            elif tok in "^$":
                raise Opaque(f"anchor {tok!r}")
            elif tok == "(":
                if text.startswith("(?", i) and not text.startswith(("(?:", "(?P<", "(?<"), i):
                    raise Opaque("inline flags")
                stack.append(i)
                self.depth = max(self.depth, len(stack))
            elif tok == ")":
                self.close[stack.pop()] = i
        if stack or cls:
            raise Opaque("unbalanced regex")

    def body(self, i: int) -> int:
        """Index just past the opening of the group at i: '(?:', '(?P<name>' or '('."""
        if self.text.startswith("(?", i):
            return self.text.index(":", i) + 1 if self.text[i + 2] == ":" else self.text.index(">", i) + 1
        return i + 1


def _items(rx: _Regex, lo: int, hi: int) -> list[list[tuple[int, int, int, int, int | None]]]:
    """Top-level alternatives of text[lo:hi], each a list of (start, end, group?, min, max) items: an atom
    with its quantifier (group? = 1 when the atom is a group; quantifier min/max, max None = unbounded)."""
    text, alts, cur, i = rx.text, [], [], lo
    while i < hi:
        ch = text[i]
        if ch == "|":
            alts.append(cur)
            cur, i = [], i + 1
            continue
        if ch == "(":
            end, group = rx.close[i] + 1, 1
        elif ch == "[":
            end, group = rx.class_end[i], 0
        elif ch == "\\":
            end, group = _ESCAPE.match(text, i).end(), 0
        else:
            end, group = i + 1, 0
        q = _QUANT.match(text, end)
        qmin, qmax = 1, 1
        if q and q.end() <= hi:
            tok = q.group()
            if tok[0] == "{":
                qmin = int(q.group(1))
                qmax = qmin if q.group(2) is None else (int(q.group(3)) if q.group(3) else None)
            else:
                qmin, qmax = (0 if tok[0] in "?*" else 1), (1 if tok[0] == "?" else None)
            cur.append((i, q.end(), group, qmin, qmax))
            i = q.end()
        else:
            cur.append((i, end, group, 1, 1))
            i = end
    alts.append(cur)
    return alts


class _Composer:
    def __init__(self, regex: str, leaf: Callable[[str], Dfa], minimise: Callable[[Dfa], Dfa]):
        self.rx = _Regex(regex)
        self.leaf_fn, self.minimise = leaf, minimise
        self.memo: dict[str, Dfa] = {}
        self.count: dict[str, int] = {}
        for i, j in self.rx.close.items():  # how often each large group's body occurs
            if j - i > LEAF_CHARS:
                t = regex[self.rx.body(i) : j]
                self.count[t] = self.count.get(t, 0) + 1

    def compile(self, lo: int, hi: int) -> Dfa:
        """The minimal automaton of text[lo:hi] (one alternation), memoised by text. A short part is one leaf
        unless outlines-core refuses it (its parser's nesting limit): then it is split like a large one."""
        text = self.rx.text[lo:hi]
        if text not in self.memo:
            split = False
            if hi - lo <= LEAF_CHARS:
                try:
                    self.memo[text] = self.leaf_fn(text)
                    return self.memo[text]
                except ValueError:
                    if "(" not in text:
                        raise
                    split = True
            nfa = Nfa()
            entries, exits, nullable = self._fragment(nfa, lo, hi, split, self._times(lo, hi))
            self.memo[text] = self.minimise(determinise(nfa, entries, exits, nullable))
        return self.memo[text]

    def _times(self, lo: int, hi: int) -> int:
        """How often the part text[lo:hi] occurs in the regex (as a group's body; the whole regex: once)."""
        return self.count.get(self.rx.text[lo:hi], 1)

    def _fragment(self, nfa: Nfa, lo: int, hi: int, split: bool, times: int) -> tuple[set, set, bool]:
        """Glushkov fragment of text[lo:hi], a part written `times` times: runs of small items are leaves,
        large groups (every group when `split`) are expanded in place or, when written more often than the
        part (so more than once inside it), compiled once and copied."""
        out_e: set[int] = set()
        out_x: set[int] = set()
        out_n = False
        for alt in _items(self.rx, lo, hi):
            frags, run = [], None
            for start, end, group, qmin, qmax in alt:
                if group and (split or end - start > LEAF_CHARS):
                    if run is not None:
                        frags.append(self._run(nfa, run, (lo, hi)))
                        run = None
                    frags.append(self._repeat(nfa, start, qmin, qmax, times))
                elif group and (qmax is None or qmax >= COUNTED) and (start, end) != (lo, hi):
                    # a counted group (a bounded string, typically) on its own: built once for all its uses
                    if run is not None:
                        frags.append(self._run(nfa, run, (lo, hi)))
                        run = None
                    frags.append(self._run(nfa, (start, end), (lo, hi)))
                elif run is not None and end - run[0] <= LEAF_CHARS:
                    run = (run[0], end)
                else:
                    if run is not None:
                        frags.append(self._run(nfa, run, (lo, hi)))
                    run = (start, end)
            if run is not None:
                frags.append(self._run(nfa, run, (lo, hi)))
            e, x, n = _concat(nfa, frags) if frags else (set(), set(), True)
            out_e |= e
            out_x |= x
            out_n |= n
        return out_e, out_x, out_n

    def _run(self, nfa: Nfa, run: tuple[int, int], whole: tuple[int, int]):
        """A piece for a run of small items (a single long atom that is the whole part: one leaf as is)."""
        if run == whole:
            text = self.rx.text[run[0] : run[1]]
            if text not in self.memo:
                self.memo[text] = self.leaf_fn(text)
            return nfa.piece(self.memo[text])
        return nfa.piece(self.compile(*run))

    def _repeat(self, nfa: Nfa, start: int, qmin: int, qmax: int | None, times: int):
        """A group with its quantifier: copies of the group's fragment (max(qmin, qmax) of them; an unbounded
        one loops). A group written twice, copied or small is compiled once (memoised) and copied."""
        close = self.rx.close[start]
        body = self.rx.body(start)
        text = self.rx.text[body:close]
        shared = close - body <= LEAF_CHARS or self.count.get(text, 0) > times or qmax is None or qmax > 1

        def one() -> tuple[set[int], set[int], bool]:
            if shared:
                return nfa.piece(self.compile(body, close))
            return self._fragment(nfa, body, close, False, times)

        if qmax is None:
            frags = [one() for _ in range(max(qmin - 1, 0))]
            e, x, n = one()
            nfa.link(x, e)  # the loop: the last copy repeats
            frags.append((e, x, n or qmin == 0))
        else:
            frags = [one() for _ in range(qmin)]
        if qmax is not None and qmax > qmin:
            tail = None  # (X (X (X)?)?)? from the innermost copy out
            for _ in range(qmax - qmin):
                e, x, n = one()
                if tail is not None:
                    nfa.link(x, tail[0])
                    x = x | tail[1]
                tail = (e, x, True)
            frags.append(tail)
        return _concat(nfa, frags) if frags else (set(), set(), True)


def _concat(nfa: Nfa, frags: list) -> tuple[set[int], set[int], bool]:
    entries, exits, nullable = frags[0]
    entries, exits = set(entries), set(exits)
    for e, x, n in frags[1:]:
        nfa.link(exits, e)
        if nullable:
            entries |= e
        exits = x | exits if n else set(x)
        nullable = nullable and n
    return entries, exits, nullable


def compose(regex: str, leaf: Callable[[str], Dfa], minimise: Callable[[Dfa], Dfa]) -> Dfa:
    """The minimal byte automaton of `regex` (not trimmed), composed part by part; Opaque when the regex
    cannot be split. `leaf` compiles a small regex, `minimise` minimises an automaton."""
    c = _Composer(regex, leaf, minimise)
    n = len(regex)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + 4 * c.rx.depth)  # a few frames per nested group (object_body nests deep)
    try:
        nfa = Nfa()
        entries, exits, nullable = c._fragment(nfa, 0, n, n <= LEAF_CHARS, 1)
        return minimise(determinise(nfa, entries, exits, nullable))
    finally:
        sys.setrecursionlimit(limit)
