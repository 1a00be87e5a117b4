"""JSON strings under `pattern`, `format` and minLength/maxLength: ECMA AST -> regex over the escaped text.

A pattern's AST (ecma_regex.py) describes decoded characters; the regex we emit describes the JSON text
between the quotes, so each character set becomes "one raw character, or one short escape (\\" \\\\ \\/ \\b
\\f \\n \\r \\t) of a character in the set". Other control characters have no short escape and are never
generated (a subset, as everywhere in schema_regex.py).

`pattern` is not anchored in JSON Schema (re.search): a top-level alternative without `^` gets any
characters in front, one without `$` any characters after. `^`/`$` elsewhere are refused.

minLength/maxLength are intersected on the AST (`restrict`): repetition counts are narrowed and, in a
sequence of several variable parts, the length budget is split between them. The result accepts a subset
of the strings of the right length (never one of the wrong length); when the split leaves nothing the
string is refused as Unsatisfiable. Formats are fixed regexes (regex_atoms.FORMATS plus the ones below),
parsed with the same parser, so they combine with length bounds the same way.
"""

from __future__ import annotations

import functools
import re

from constraints import regex_atoms as ra
from constraints.ecma_regex import ANY, EMPTY, Alt, Anchor, Chars, Rep, Seq, parse_pattern
from constraints.schema_errors import Unsatisfiable, UnsupportedSchema

# JSON short escapes: decoded character -> the letter after the backslash
_JSON_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "\b": "b", "\f": "f", "\n": "n", "\r": "r", "\t": "t"}
_PAD = Rep(ANY, 0, None)  # the characters around an unanchored pattern
COUNT_CAP = 64  # a pattern's {m,n} generates at most max(m, COUNT_CAP) copies (budget.STRING_CAP alike)
_UNROLL = 16  # exact repeat counts up to this are unrolled when a length bound must be shared
_RAW_EXCLUDED = ((0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C), (0xD800, 0xDFFF))  # surrogates are not text

# Subsets of what each format's checker accepts (jsonschema's FormatChecker: fqdn, rfc3987 or
# rfc3986-validator, ipaddress, jsonpointer when installed): lowercase ASCII host labels without hyphens,
# http(s) URIs over unreserved characters, fully written IPv6 addresses.
_LABEL = "[a-z][a-z0-9]{0,19}"
_HOST = rf"{_LABEL}(?:\.{_LABEL}){{0,3}}"
_SEGMENT = "[A-Za-z0-9._~-]"
_URI = rf"https?://{_HOST}(?::[1-9][0-9]{{0,3}})?(?:/{_SEGMENT}*)*(?:\?[A-Za-z0-9._~=&-]*)?"
_POINTER = "(?:/[A-Za-z0-9_.-]*)*"
FORMATS: dict[str, str] = {
    **ra.FORMATS,
    "hostname": _HOST,
    "idn-hostname": _HOST,
    "ipv6": "[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){7}",
    "uri": _URI,
    "iri": _URI,
    "uri-reference": rf"(?:{_URI}|/{_SEGMENT}+(?:/{_SEGMENT}*)*)",
    "iri-reference": rf"(?:{_URI}|/{_SEGMENT}+(?:/{_SEGMENT}*)*)",
    "uri-template": _URI,
    "json-pointer": _POINTER,
    # jsonschema's checker rejects a digit after a 0 anywhere in the number ("10"): no zeros after the first
    "relative-json-pointer": f"(?:0|[1-9]{{1,3}})(?:#|{_POINTER})",
    "regex": "[A-Za-z0-9 _]*",
}


def search_key(pattern: str, key: str, where: str) -> bool:
    """re.search(pattern, key) as jsonschema evaluates patternProperties; refuses what Python rejects."""
    try:
        return re.search(pattern, key) is not None
    except (re.error, TypeError) as e:
        raise UnsupportedSchema(f"unsupported: patternProperties {pattern!r} ({e}) (at {where})") from None


def string_regex(s: dict, lo: int, hi: int | None, path: str) -> str | None:
    """The quoted-string regex for `pattern`/`format` with lengths in [lo, hi], or None if neither applies.

    None means the plain string_pattern(lo, hi) is exact (no pattern, and a format we ignore).
    """
    fmt, pat = s.get("format"), s.get("pattern")
    known = fmt in FORMATS
    if pat is not None:
        if known or fmt in ra.CHECKED_FORMATS:
            raise UnsupportedSchema(f"unsupported: pattern together with format {fmt!r} (at {path})")
        node, what = pattern_node(pat, path + "/pattern"), f"pattern {pat!r}"
    elif known:
        node, what = format_node(fmt), f"format {fmt!r}"
    elif fmt in ra.CHECKED_FORMATS:
        raise UnsupportedSchema(f"unsupported: format {fmt!r} (at {path})")
    else:
        return None
    if lo > 0 or hi is not None:
        node = restrict(_without_lead_pad(node), lo, hi)
        if node is None:
            raise Unsatisfiable(
                f"unsupported: {what} with minLength/maxLength {lo}..{hi} "
                f"(no string we generate fits) (at {path})"
            )
    return '"' + emit(node) + '"'


@functools.lru_cache(maxsize=4096)
def format_node(fmt: str):
    return parse_pattern(FORMATS[fmt], "#format")


@functools.lru_cache(maxsize=4096)
def pattern_node(pattern: str, where: str):
    """The AST of the strings re.search(pattern, .) accepts that we generate (anchors made explicit)."""
    top = parse_pattern(pattern, where)
    alts = top.items if isinstance(top, Alt) else (top,)
    out = []
    for alt in alts:
        items = list(alt.items) if isinstance(alt, Seq) else [alt]
        start = end = False
        while items and items[0] == Anchor("^"):
            items, start = items[1:], True
        while items and items[-1] == Anchor("$"):
            items, end = items[:-1], True
        if any(_has_anchor(x) for x in items):
            raise UnsupportedSchema(f"unsupported: pattern {pattern!r} (an anchor inside) (at {where})")
        pad = _PAD
        out.append(Seq(tuple(([] if start else [pad]) + items + ([] if end else [pad]))))
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


def _has_anchor(n) -> bool:
    if isinstance(n, Anchor):
        return True
    if isinstance(n, (Seq, Alt)):
        return any(_has_anchor(x) for x in n.items)
    return isinstance(n, Rep) and _has_anchor(n.item)


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
