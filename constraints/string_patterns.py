"""JSON strings under pattern, format, `not` and minLength/maxLength: ECMA AST -> regex over the JSON text.

A pattern's AST (ecma_regex.py) describes decoded characters; the regex we emit describes the JSON text
between the quotes, so each character set becomes "one raw character, or one short escape (\\" \\\\ \\/ \\b
\\f \\n \\r \\t) of a character in the set". Other control characters have no short escape and are never
generated (a subset, as everywhere in schema_regex.py).

`pattern` is not anchored in JSON Schema (re.search): a top-level alternative without `^` gets any
characters in front, one without `$` any characters after. `^`/`$` elsewhere are refused, and lookarounds
but for a leading `^(?!X)` (string_sets.py `leading_negative_lookahead`: X's strings excluded).

One language (a pattern, or a format: string_formats.py) is narrowed to minLength/maxLength on the AST
(`restrict`): repetition counts are narrowed and, in a sequence of several variable parts, the length budget
is split between them. The result accepts a subset of the strings of the right length (never one of the
wrong length); when the split leaves nothing the string is refused as Unsatisfiable. Several languages (a
pattern and a format, patterns conjoined by allOf: string_sets.py, languages a `not` excludes: negation.py)
are intersected exactly, lengths included, by char_automaton.py.
"""

from __future__ import annotations

import functools
import re

from constraints import regex_atoms as ra
from constraints.char_automaton import TooComplex, combine
from constraints.ecma_regex import ANY, EMPTY, Alt, Chars, Rep, Seq
from constraints.schema_errors import Unsatisfiable, UnsupportedSchema
from constraints.string_formats import FORMATS, format_node
from constraints.string_sets import (
    anchored_alternatives,
    leading_negative_lookahead,
    search_superset,
    split_conjunction,
)

__all__ = ["FORMATS", "emit", "pattern_node", "search_key", "string_regex"]

# JSON short escapes: decoded character -> the letter after the backslash
_JSON_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "\b": "b", "\f": "f", "\n": "n", "\r": "r", "\t": "t"}
_PAD = Rep(ANY, 0, None)  # the characters around an unanchored pattern
COUNT_CAP = 64  # a pattern's {m,n} generates at most max(m, COUNT_CAP) copies (budget.STRING_CAP alike)
_UNROLL = 16  # exact repeat counts up to this are unrolled when a length bound must be shared
_RAW_EXCLUDED = ((0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C), (0xD800, 0xDFFF))  # surrogates are not text


def search_key(pattern: str, key: str, where: str) -> bool:
    """re.search(pattern, key) as jsonschema evaluates patternProperties; refuses what Python rejects."""
    try:
        return re.search(pattern, key) is not None
    except (re.error, TypeError) as e:
        raise UnsupportedSchema(f"unsupported: patternProperties {pattern!r} ({e}) (at {where})") from None


def string_regex(s: dict, lo: int, hi: int | None, path: str, exclude: tuple = ()) -> str | None:
    """The quoted-string regex for `pattern`/`format` with lengths in [lo, hi] and none of the `exclude`
    languages (negation.py: tuples of ASTs, each the conjunction of its members), or None if nothing applies.

    None means the plain string_pattern(lo, hi) is exact (no pattern, no exclusion, a format we ignore).
    """
    fmt, pat = s.get("format"), s.get("pattern")
    pos, what = [], []
    if pat is not None:
        for p in split_conjunction(pat):
            if (la := leading_negative_lookahead(p)) is not None:  # ^(?!X)R: R's strings, none starting X
                p, starts = la
                exclude = (*exclude, *((search_superset(x, path + "/pattern"),) for x in starts))
            pos.append(pattern_node(p, path + "/pattern"))
        what.append(f"pattern {pat!r}")
    if fmt in FORMATS:
        pos.append(format_node(fmt))
        what.append(f"format {fmt!r}")
    elif fmt in ra.CHECKED_FORMATS:
        raise UnsupportedSchema(f"unsupported: format {fmt!r} (at {path})")
    if not pos and not exclude:
        return None
    bounded = lo > 0 or hi is not None
    if len(pos) == 1 and not exclude:
        node = restrict(_without_lead_pad(pos[0]), lo, hi) if bounded else pos[0]
    else:
        node = _intersect(pos, list(exclude), lo, hi, path)
    if node is None:
        why = " and ".join(what) or "not"
        if bounded:
            why += f" with minLength/maxLength {lo}..{hi}"
        raise Unsatisfiable(f"unsupported: {why} (no string we generate fits) (at {path})")
    return '"' + emit(node) + '"'


def _intersect(pos: list, exclude: list, lo: int, hi: int | None, path: str):
    """The strings of every `pos` AST, of none of the `exclude` conjunctions, with lengths in [lo, hi].

    Exact when the automata fit char_automaton.py's caps; otherwise a subset, trying in turn: the lengths
    narrowed on the result's AST (`restrict`) instead of in the product, then the positive patterns
    without their unanchored `.*` ends (just the pattern's own match, which cannot hold a forbidden word
    the pattern itself does not spell)."""
    bounded = lo > 0 or hi is not None
    lengths = [Rep(ANY, lo, hi)] if bounded else []
    tight = [_without_pads(n) for n in pos]
    tries = [(pos + lengths, False), (pos, True), (tight + lengths, False), (tight, True)]
    error: UnsupportedSchema | None = None
    for operands, narrow in tries if bounded else tries[::2]:
        try:
            node = combine(operands or [_PAD], exclude, _usable)
        except TooComplex as e:
            error = error or e
            continue
        except UnsupportedSchema as e:
            raise UnsupportedSchema(f"{e} (at {path})") from None
        return restrict(node, lo, hi) if narrow and node is not None else node
    raise UnsupportedSchema(f"{error} (at {path})")


def _without_pads(n):
    """`n` without the `.*` an unanchored alternative starts or ends with (a subset of its strings)."""
    if isinstance(n, Alt):
        return Alt(tuple(_without_pads(x) for x in n.items))
    if isinstance(n, Seq):
        items = list(n.items)
        while items and items[0] == _PAD:
            items = items[1:]
        while items and items[-1] == _PAD:
            items = items[:-1]
        return Seq(tuple(items))
    return n


def _usable(ranges) -> bool:
    return _emittable(Chars(ranges, ranges))


@functools.lru_cache(maxsize=4096)
def pattern_node(pattern: str, where: str):
    """The AST of the strings re.search(pattern, .) accepts that we generate (anchors made explicit)."""
    out, inner = [], []
    for items, start, end in anchored_alternatives(pattern, where):
        if not start and not end:  # `.*(a|b|...).*` below: the same strings
            inner.append(Seq(tuple(items)))
        else:
            out.append(Seq(tuple(([] if start else [_PAD]) + items + ([] if end else [_PAD]))))
    if inner:
        # One pair of pads around the unanchored alternatives, not a pair each: `.*w1.*|...|.*w30.*` makes
        # the subset construction track which words' tails are live (2^30 subsets; a Github_hard schema's
        # patternProperties), `.*(w1|...|w30).*` only how far into a word it is.
        out.append(Seq((_PAD, inner[0] if len(inner) == 1 else Alt(tuple(inner)), _PAD)))
    node = prune(_cap_counts(out[0] if len(out) == 1 else Alt(tuple(out))))
    if node is None:
        why = "no string we generate matches it"
        raise Unsatisfiable(f"unsupported: pattern {pattern!r} ({why}) (at {where})")
    return node


def _cap_counts(n):
    """`n` with each repetition's upper count cut to max(its minimum, COUNT_CAP): fewer repetitions still
    match (a subset), and `x{1,10000}` would otherwise be 10,000 copies of x in the automaton."""
    if isinstance(n, (Seq, Alt)):
        return type(n)(tuple(_cap_counts(x) for x in n.items))
    if isinstance(n, Rep):
        hi = n.hi if n.hi is None or n.hi <= COUNT_CAP else max(n.lo, COUNT_CAP)
        return Rep(_cap_counts(n.item), n.lo, hi)
    return n


def _without_lead_pad(n):
    """`n` without the leading `.*` of an alternative that also ends in one (a subset): with both padded
    and counted, the automaton must remember where the pattern could have started (quadratic or worse)."""
    if isinstance(n, Alt):
        return Alt(tuple(_without_lead_pad(x) for x in n.items))
    if isinstance(n, Seq) and len(n.items) > 2 and n.items[0] == _PAD and n.items[-1] == _PAD:
        return Seq(n.items[1:])
    return n


def _emittable(c: Chars) -> bool:
    return bool(_raw(c.must)) or any(_contains(c.must, ord(ch)) for ch in _JSON_ESCAPES)


def prune(n):
    """`n` without the parts that generate nothing (character sets with no emittable character); None if
    nothing is left."""
    if isinstance(n, Chars):
        return n if _emittable(n) else None
    if isinstance(n, Seq):
        items = [prune(x) for x in n.items]
        return None if any(x is None for x in items) else Seq(tuple(items))
    if isinstance(n, Alt):
        items = [x for x in (prune(y) for y in n.items) if x is not None]
        return None if not items else items[0] if len(items) == 1 else Alt(tuple(items))
    item = prune(n.item)
    if item is None:
        return EMPTY if n.lo == 0 else None
    return Rep(item, n.lo, n.hi)


def length(n) -> tuple[int, int | None]:
    """(fewest, most) decoded characters of `n`'s strings (most None: unbounded); `n` pruned."""
    if isinstance(n, Chars):
        return 1, 1
    if isinstance(n, Alt):
        ls = [length(x) for x in n.items]
        his = [h for _, h in ls]
        return min(lo for lo, _ in ls), None if None in his else max(his)
    if isinstance(n, Seq):
        lo, hi = 0, 0
        for x in n.items:
            a, b = length(x)
            lo, hi = lo + a, None if hi is None or b is None else hi + b
        return lo, hi
    a, b = length(n.item)
    return a * n.lo, None if (n.hi is None and b != 0) or b is None else b * (n.hi or 0)


def restrict(n, lo: int, hi: int | None):
    """A part of `n`'s language with every length in [lo, hi] (None if we find none); `n` pruned."""
    a, b = length(n)
    if a >= lo and (hi is None or (b is not None and b <= hi)):
        return n
    if (hi is not None and a > hi) or (b is not None and b < lo):
        return None
    if isinstance(n, Alt):
        items = [x for x in (restrict(y, lo, hi) for y in n.items) if x is not None]
        return None if not items else items[0] if len(items) == 1 else Alt(tuple(items))
    if isinstance(n, Seq):
        return _restrict_seq(n, lo, hi)
    if isinstance(n, Rep):
        return _restrict_rep(n, lo, hi)
    return None


def _restrict_rep(n: Rep, lo: int, hi: int | None):
    a, b = length(n.item)
    if n.lo == n.hi and 1 < n.lo <= _UNROLL:  # a few variable copies: share the budget like a sequence
        return _restrict_seq(Seq((n.item,) * n.lo), lo, hi)
    if a == b and a > 0:  # fixed-size copies: narrow the count
        c_lo = max(n.lo, -(-lo // a))
        c_hi = hi // a if n.hi is None else (n.hi if hi is None else min(n.hi, hi // a))
        return Rep(n.item, c_lo, c_hi) if c_lo <= c_hi else None
    # variable copies: c copies of at most hi // c characters each (and at least ceil(lo / c))
    c = max(n.lo, 1)
    per_hi = None if hi is None else hi // c
    item = restrict(n.item, 0 if lo == 0 else -(-lo // c), per_hi)
    if item is None:
        return EMPTY if n.lo == 0 and lo == 0 else None
    return Rep(item, n.lo, c) if lo == 0 else Rep(item, c, c)


def _restrict_seq(n: Seq, lo: int, hi: int | None):
    """Split [lo, hi] between the parts: every part gets a sub-range, and any choice of lengths within
    them sums into [lo, hi]. Upper slack is shared evenly, then missing minimum length is added greedily."""
    ranges = [list(length(x)) for x in n.items]
    bounds = [[a, a] for a, _ in ranges]
    pads = [bd for bd, x in zip(bounds, n.items) if x == _PAD]
    if hi is None:
        for bd, (_, b) in zip(bounds, ranges):
            bd[1] = b
    else:
        slack = hi - sum(a for a, _ in ranges)
        open_ = [i for i, (a, b) in enumerate(ranges) if b is None or b > a]
        while slack > 0 and open_:
            share = max(slack // len(open_), 1)
            for i in list(open_):
                cap = None if ranges[i][1] is None else ranges[i][1] - bounds[i][1]
                give = min(share, slack) if cap is None else min(share, slack, cap)
                bounds[i][1] += give
                slack -= give
                if cap is not None and give == cap:
                    open_.remove(i)
                if slack == 0:
                    break
    need = lo - sum(bd[0] for bd in bounds)
    # the pattern's own parts take the missing length before the `.*` padding of an unanchored end
    for bd in sorted(bounds, key=lambda bd: any(x is bd for x in pads)):
        if need <= 0:
            break
        room = need if bd[1] is None else min(need, bd[1] - bd[0])
        bd[0] += room
        need -= room
    if need > 0:
        return None
    items = []
    for x, (a, b) in zip(n.items, bounds):
        y = restrict(x, a, b)
        if y is None:
            return None
        items.append(y)
    return Seq(tuple(items))


def emit(n) -> str:
    """The regex (outlines-core / Rust syntax) over the JSON-escaped text of `n`'s strings; `n` pruned."""
    if isinstance(n, Chars):
        return _emit_chars(n.must)
    if isinstance(n, Seq):
        return "".join(emit(x) for x in n.items)
    if isinstance(n, Alt):
        return "(?:" + "|".join(emit(x) for x in n.items) + ")"
    if n.hi == 0:
        return ""
    inner = emit(n.item)
    if not isinstance(n.item, Chars):
        inner = f"(?:{inner})"
    if (n.lo, n.hi) == (0, None):
        return inner + "*"
    if (n.lo, n.hi) == (1, None):
        return inner + "+"
    if (n.lo, n.hi) == (0, 1):
        return inner + "?"
    if n.lo == n.hi:
        return f"{inner}{{{n.lo}}}"
    return f"{inner}{{{n.lo},{'' if n.hi is None else n.hi}}}"


def _contains(ranges, cp: int) -> bool:
    return any(a <= cp <= b for a, b in ranges)


def _raw(ranges) -> list[tuple[int, int]]:
    """`ranges` minus the characters JSON must escape (and surrogates)."""
    out = []
    for a, b in ranges:
        for xa, xb in _RAW_EXCLUDED:
            if xb < a or xa > b:
                continue
            if xa > a:
                out.append((a, xa - 1))
            a = max(a, xb + 1)
            if a > b:
                break
        if a <= b:
            out.append((a, b))
    return out


def _cp(c: int) -> str:
    """One code point in a regex (also inside a class): letters/digits and non-ASCII as themselves."""
    ch = chr(c)
    return ch if ch.isalnum() or c >= 0x80 else f"\\x{c:02x}"


@functools.lru_cache(maxsize=4096)
def _emit_chars(must) -> str:
    raw = _raw(must)
    letters = [letter for ch, letter in _JSON_ESCAPES.items() if _contains(must, ord(ch))]
    esc = "".join("\\\\" if letter == "\\" else letter for letter in letters)
    alts = []
    if raw:
        if len(raw) == 1 and raw[0][0] == raw[0][1]:
            alts.append(_cp(raw[0][0]))
        else:
            alts.append("[" + "".join(_cp(a) if a == b else f"{_cp(a)}-{_cp(b)}" for a, b in raw) + "]")
    if esc:
        alts.append("\\\\" + (esc if len(esc) == 1 else f"[{esc}]"))
    return alts[0] if len(alts) == 1 and raw else "(?:" + "|".join(alts) + ")"  # always one atom
