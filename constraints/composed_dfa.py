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

import bisect
import re
import sys
from collections.abc import Callable

import numpy as np

from constraints.piece_nfa import ClassDfa, Determinise, Dfa, Nfa, determinise_classes

# a part this short is one leaf, compiled by outlines-core as a whole. Short: outlines-core spends ~15 us a
# state on a leaf of several bounded strings (8k states), the subset construction much less once the strings
# are pieces of their own (95 slow JSONSchemaBench schemas' builds, min of 2: 52.1 s at 2,000, 46.2 s at
# 1,000, 39.9 s at 250; the same tables: byte_automaton.py numbers a composed build breadth-first)
LEAF_CHARS = 250
COUNTED = 8  # a group repeated up to this many times or more is a leaf of its own (shared by all its uses)
APART = 32  # a short part holding a group repeated this many times or more is split around it

_SPECIAL_CODES = np.zeros(128, dtype=bool)  # the characters the scan reads: \ [ ] ( ) ^ $
_SPECIAL_CODES[[ord(c) for c in "\\[]()^$"]] = True
_BOUNDARY_CODES = [ord(c) for c in "bBAz"]  # \b \B \A \z: word boundaries and anchors
_ESCAPE = re.compile(
    r"\\(?:[xuU]\{[0-9A-Fa-f]+\}|x[0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|[pP]\{[^}]*\}|[pP][A-Za-z]|.)",
    re.S,
)
_QUANT = re.compile(r"(?:[?*+]|\{(\d+)(?:(,)(\d*))?\})\??")
# a ')' with a quantifier of 10 or more copies (two digits or more: a count under APART is read no further)
_GROUP_COUNT = re.compile(r"\)\{(\d{2,}|\d+,\d{2,}|\d{2,},\d*)\}")


class Opaque(ValueError):
    """The regex uses a construct whose meaning a separately compiled part would change (flags, anchors)."""


class _Regex:
    """The regex's group and class spans, from one vectorised scan of its special characters (numpy over
    the text's code points: a Python loop over them took 0.2-0.4 s on a 1.3M-character schema regex).

    close[i]: index of the ')' of the '(' at i; class_end[i]: index just past the ']' of the outermost '['
    at i (arrays over the text's indices, meaningful at those openings: `group_close`, `class_stop`);
    opens: the indices of the group openings, ascending; depth: the deepest group nesting. Classes nest as
    in Rust's regex syntax: inside one, '[' opens another, and a ']' right after '[' or '[^' is a literal.
    Opaque for what `Opaque` names and for an unbalanced regex: the first such construct in the text is the
    one reported (tests/constraints/test_regex_scan.py holds the loop this replaced, as the reference).
    """

    def __init__(self, text: str):
        self.text = text
        n = len(text)
        # one code per character (utf-32), so array indices are text indices; the three pads make the
        # look-ahead of '(?P<' and the look-behind from index 0 or 1 (wrapping to the end) read zeros
        code = np.frombuffer((text + "\0\0\0").encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        at = np.flatnonzero(_SPECIAL_CODES[np.minimum(code, 127)])
        ch = code[at]
        # a run of backslashes escapes every other character, from its first on
        bs = at[ch == ord("\\")]
        k = np.arange(bs.size)
        esc = bs[(k - np.maximum.accumulate(np.where(np.diff(bs, prepend=-2) != 1, k, 0))) % 2 == 0]
        escaped = np.zeros(n + 3, dtype=bool)
        escaped[esc + 1] = True
        keep = (ch != ord("\\")) & ~escaped[at]
        tok, ch = at[keep], ch[keep]  # the unescaped [ ] ( ) ^ $, ascending
        # classes: '[' steps +1, a closing ']' -1 (a literal one 0); the class nesting after each token is
        # that walk held at zero (a ']' outside classes is text): its sum less its lowest point so far
        shut = np.flatnonzero(ch == ord("]"))
        p = tok[shut]
        literal = (code[p - 1] == ord("[")) & ~escaped[p - 1]
        literal |= (code[p - 1] == ord("^")) & (code[p - 2] == ord("[")) & ~escaped[p - 2]
        step = (ch == ord("[")).astype(np.int32)
        step[shut[~literal]] = -1
        walk = np.cumsum(step, dtype=np.int32)
        nest = walk - np.minimum(np.minimum.accumulate(walk), 0)
        inside = np.zeros(tok.size, dtype=bool)  # the token is inside a class
        inside[1:] = nest[:-1] > 0
        outside = ~inside
        errors = []  # (index, message) of the first offence of each kind
        bad = esc[np.isin(code[esc + 1], _BOUNDARY_CODES)]
        if bad.size:  # outside classes: the class nesting after the tokens before the backslash is 0
            bad = bad[np.append(0, nest)[np.searchsorted(tok, bad)] == 0]
        if bad.size:
            errors.append((int(bad[0]), f"word boundary or anchor {text[bad[0] : bad[0] + 2]!r}"))
        anchor = tok[outside & ((ch == ord("^")) | (ch == ord("$")))]
        if anchor.size:
            errors.append((int(anchor[0]), f"anchor {text[anchor[0]]!r}"))
        group = outside & ((ch == ord("(")) | (ch == ord(")")))
        pos, opening = tok[group], ch[group] == ord("(")
        self.opens = pos[opening]
        after = code[self.opens + 2]  # '(?:', '(?<name>' and '(?P<name>' are plain groups
        plain = (after == ord(":")) | (after == ord("<"))
        plain |= (after == ord("P")) & (code[self.opens + 3] == ord("<"))
        flags = (code[self.opens + 1] == ord("?")) & ~plain
        if flags.any():
            errors.append((int(self.opens[np.argmax(flags)]), "inline flags"))
        level = np.cumsum(np.where(opening, 1, -1))  # the group nesting after each parenthesis
        if level.size and level.min() < 0:
            errors.append((int(pos[np.argmax(level < 0)]), "unbalanced regex"))  # a ')' with no '('
        if errors:
            raise Opaque(min(errors)[1])
        if (level.size and level[-1]) or (nest.size and nest[-1]):
            raise Opaque("unbalanced regex")
        self.depth = int(level.max()) if level.size else 0
        # a '(' and its ')' are consecutive among the parentheses of their level, in text order (a stable
        # sort by level pairs them; on the smallest type numpy sorts by radix)
        level[~opening] += 1
        pairs = np.argsort(level.astype(np.min_scalar_type(self.depth)), kind="stable")
        self.close = np.zeros(n, dtype=np.int64)
        self.close[pos[pairs[0::2]]] = pos[pairs[1::2]]
        # outermost classes: a '[' outside classes, then the ']' back outside, alternately
        self.class_end = np.zeros(n, dtype=np.int64)
        self.class_end[tok[outside & (ch == ord("["))]] = tok[inside & (nest == 0)] + 1

    def group_close(self, i: int) -> int:
        """Index of the ')' of the group opening at i (KeyError where no group opens)."""
        j = int(self.close[i])
        if j <= i:
            raise KeyError(i)
        return j

    def class_stop(self, i: int) -> int:
        """Index just past the outermost class opening at i (KeyError where no such class opens)."""
        j = int(self.class_end[i])
        if j <= i:
            raise KeyError(i)
        return j

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
            end, group = rx.group_close(i) + 1, 1
        elif ch == "[":
            end, group = rx.class_stop(i), 0
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
    def __init__(
        self,
        regex: str,
        leaf: Callable[[str], Dfa],
        minimise: Callable[[ClassDfa], Dfa],
        determinise: Determinise,
    ):
        self.rx = _Regex(regex)
        self.leaf_fn, self.minimise, self.determinise = leaf, minimise, determinise
        self.memo: dict[str, Dfa] = {}
        self.labels: dict = {}  # the pieces' byte classes, by id (piece_nfa.py Nfa), shared by every part
        self.count: dict[str, int] = {}
        self.counted = _counted_groups(self.rx)
        opens = self.rx.opens  # how often each large group's body occurs
        closes = self.rx.close[opens]
        large = closes - opens > LEAF_CHARS
        for i, j in zip(opens[large].tolist(), closes[large].tolist()):
            t = regex[self.rx.body(i) : j]
            self.count[t] = self.count.get(t, 0) + 1

    def compile(self, lo: int, hi: int) -> Dfa:
        """The minimal automaton of text[lo:hi] (one alternation), memoised by text. A short part is one leaf
        unless it holds a counted group (built apart: `holds_counted`) or outlines-core refuses it (its
        parser's nesting limit): then it is split like a large one."""
        text = self.rx.text[lo:hi]
        if text not in self.memo:
            split = False
            if hi - lo <= LEAF_CHARS and not self.holds_counted(lo, hi):
                try:
                    self.memo[text] = self.leaf_fn(text)
                    return self.memo[text]
                except ValueError:
                    if "(" not in text:
                        raise
                    split = True
            nfa = Nfa(self.labels)
            entries, exits, nullable = self._fragment(nfa, lo, hi, split, self._times(lo, hi))
            self.memo[text] = self.minimise(self.determinise(nfa, entries, exits, nullable))
        return self.memo[text]

    def holds_counted(self, lo: int, hi: int) -> bool:
        """Whether a counted group opens in text[lo:hi]: one outlines-core would copy APART times or more
        (a bounded string). Its part is then not one leaf: the group is built once for all its uses and
        the text around it in leaves (o62895's 141 leaves, most holding strings of {1,64} characters in
        small optional groups: 0.42 s in outlines-core)."""
        i = bisect.bisect_left(self.counted, lo)
        return i < len(self.counted) and self.counted[i] < hi

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
        alts = _items(self.rx, lo, hi)
        for alt in alts if split else _merged(alts, self.holds_counted):
            frags, run = [], None
            for start, end, group, qmin, qmax in alt:
                if group and (split or end - start > LEAF_CHARS or self.holds_counted(start + 1, end)):
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
        close = self.rx.group_close(start)
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


def _merged(alts: list[list[tuple]], holds_counted: Callable[[int, int], bool]) -> list[list[tuple]]:
    """`alts` with each run of consecutive alternatives that would each be one small leaf (no group built
    apart: neither large nor counted, nor holding a counted one) joined into one alternative of one item,
    their text with its bars, up to LEAF_CHARS: one leaf instead of one per alternative (an enum of 2,670
    strings made 2,670 calls into outlines-core, 0.4 s of cryproj.54's 0.9 s build)."""
    out: list[list[tuple]] = []
    run: list[list[tuple]] = []

    def flush() -> None:
        if len(run) > 1:
            out.append([(run[0][0][0], run[-1][-1][1], 0, 1, 1)])
        else:
            out.extend(run)
        run.clear()

    for alt in alts:
        small = bool(alt) and alt[-1][1] - alt[0][0] <= LEAF_CHARS and all(
            not group or (qmax is not None and qmax < COUNTED) for _, _, group, _, qmax in alt
        ) and not holds_counted(alt[0][0], alt[-1][1])
        if not small:
            flush()
            out.append(alt)
            continue
        if run and alt[-1][1] - run[0][0][0] > LEAF_CHARS:
            flush()
        run.append(alt)
    flush()
    return out


def _counted_groups(rx: _Regex) -> list[int]:
    """The opening indices (ascending) of the groups with a quantifier of APART or more copies: {n},
    {n,} or {n,m} with max(n, m) >= APART (a ')' that closes no group, an escaped one, is skipped)."""
    closes = rx.close[rx.opens]
    by_close = np.argsort(closes)
    closes = closes[by_close]
    out = []
    for m in _GROUP_COUNT.finditer(rx.text):
        if max(int(x or 0) for x in m.group(1).split(",")) < APART:
            continue
        i = int(np.searchsorted(closes, m.start()))
        if i < closes.size and closes[i] == m.start():
            out.append(int(rx.opens[by_close[i]]))
    return sorted(out)


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


def compose(
    regex: str,
    leaf: Callable[[str], Dfa],
    minimise: Callable[[ClassDfa], Dfa],
    determinise: Determinise = determinise_classes,
    last: Callable[[ClassDfa], object] | None = None,
):
    """The minimal byte automaton of `regex` (not trimmed), composed part by part; Opaque when the regex
    cannot be split. `leaf` compiles a small regex, `determinise` is the subset construction of every part
    (piece_nfa.py's `determinise_classes`, its size rule, or one of its kernels: byte_automaton.py's `Steps`
    chooses), `minimise` minimises what it gives by byte class; the whole regex's subset construction goes
    to `last` instead when given (what it returns is returned)."""
    c = _Composer(regex, leaf, minimise, determinise)
    n = len(regex)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + 4 * c.rx.depth)  # a few frames per nested group (object_body nests deep)
    try:
        nfa = Nfa(c.labels)
        entries, exits, nullable = c._fragment(nfa, 0, n, n <= LEAF_CHARS, 1)
        return (last or minimise)(determinise(nfa, entries, exits, nullable))
    finally:
        sys.setrecursionlimit(limit)
