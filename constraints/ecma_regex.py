"""Parse a JSON Schema `pattern` (ECMA-262 syntax, checked by jsonschema with Python's `re`) into a small AST.

The AST describes strings by decoded characters (code points). jsonschema validates `pattern` with
`re.search` (https://github.com/python-jsonschema/jsonschema/blob/main/jsonschema/_keywords.py), while the
pattern is written for ECMA-262 (https://tc39.es/ecma262/#sec-patterns); where the two dialects read an
escape differently we must only ever generate strings both accept. So every character set carries two
code point sets:
  must: characters that match under both readings (what we generate),
  may:  characters that could match under either reading (a superset; the `must` of a negated class is
        the complement of the `may` of its parts).
Example: `\\d` is [0-9] in ECMA and every Unicode decimal digit in Python: must = [0-9], may = [0-9] plus
all non-ASCII; so `\\D` (and `[^\\d]`) generate only ASCII non-digits.

Refused by name (UnsupportedSchema): lookarounds, backreferences, word boundaries, inline flags, possessive
quantifiers, \\A \\Z, `{,n}` (a quantifier in Python, a literal in ECMA), a class starting with `]`, and any
escape whose meaning differs between the dialects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from constraints.schema_errors import UnsupportedSchema

MAX_CP = 0x10FFFF
Ranges = tuple[tuple[int, int], ...]  # sorted, disjoint, inclusive code point ranges


def norm(ranges) -> Ranges:
    """Sorted, merged copy of (lo, hi) ranges."""
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((a, b) for a, b in out)


def complement(ranges: Ranges) -> Ranges:
    out, nxt = [], 0
    for lo, hi in ranges:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= MAX_CP:
        out.append((nxt, MAX_CP))
    return tuple(out)


def _cps(*chars: str) -> Ranges:
    return norm((ord(c), ord(c)) for c in chars)


# ECMA WhiteSpace + LineTerminator vs Python's str \s (str.isspace plus \x1c-\x1f): both / either.
_SPACE_BOTH = norm(
    [(0x09, 0x0D), (0x20, 0x20), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A), (0x2028, 0x2029)]
    + [(0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000)]
)
_SPACE_EITHER = norm(list(_SPACE_BOTH) + [(0x1C, 0x1F), (0x85, 0x85), (0xFEFF, 0xFEFF)])
_DIGIT = ((0x30, 0x39),)
_WORD = norm([(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)])
_NON_ASCII = ((0x80, MAX_CP),)
# escape letter -> (must, may); Python's \d and \w also match non-ASCII digits / letters
_CLASS_ESCAPES: dict[str, tuple[Ranges, Ranges]] = {
    "d": (_DIGIT, norm(_DIGIT + _NON_ASCII)),
    "w": (_WORD, norm(_WORD + _NON_ASCII)),
    "s": (_SPACE_BOTH, _SPACE_EITHER),
}
for _k in "dws":
    _must, _may = _CLASS_ESCAPES[_k]
    _CLASS_ESCAPES[_k.upper()] = (complement(_may), complement(_must))
_CHAR_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "f": "\f", "v": "\v"}
_DOT = (complement(_cps("\n", "\r", "\u2028", "\u2029")), complement(_cps("\n")))  # ECMA / Python dot


@dataclass(frozen=True)
class Chars:
    """One character from a set: `must` is generated, `may` bounds what either dialect could match."""

    must: Ranges
    may: Ranges


@dataclass(frozen=True)
class Seq:
    items: tuple


@dataclass(frozen=True)
class Alt:
    items: tuple


@dataclass(frozen=True)
class Rep:
    item: object
    lo: int
    hi: int | None  # None: unbounded


@dataclass(frozen=True)
class Anchor:
    kind: str  # "^" or "$"


ANY = Chars(((0, MAX_CP),), ((0, MAX_CP),))
EMPTY = Seq(())


def literal(ch: str) -> Chars:
    r = _cps(ch)
    return Chars(r, r)


class _Parser:
    def __init__(self, pattern: str, where: str):
        self.p, self.i, self.where = pattern, 0, where

    def refuse(self, what: str):
        raise UnsupportedSchema(f"unsupported: pattern {self.p!r} ({what}) (at {self.where})")

    def peek(self, k: int = 0) -> str:
        return self.p[self.i + k] if self.i + k < len(self.p) else ""

    def take(self) -> str:
        ch = self.peek()
        self.i += 1
        return ch

    def parse(self):
        node = self.alternation()
        if self.i < len(self.p):
            self.refuse(f"unbalanced ')' at offset {self.i}")
        return node

    def alternation(self):
        alts = [self.sequence()]
        while self.peek() == "|":
            self.i += 1
            alts.append(self.sequence())
        return alts[0] if len(alts) == 1 else Alt(tuple(alts))

    def sequence(self):
        items: list = []
        while self.peek() not in ("", "|", ")"):
            atom = self.atom()
            quant = self.quantifier()
            if quant is not None:
                if isinstance(atom, Anchor):
                    self.refuse("quantified anchor")
                atom = Rep(atom, *quant)
                if self.peek() == "?":  # lazy: the same language
                    self.i += 1
                if self.peek() in ("*", "+", "?", "{") and self.quantifier_ahead():
                    self.refuse("possessive or repeated quantifier")
            items.append(atom)
        return items[0] if len(items) == 1 else Seq(tuple(items))

    def quantifier_ahead(self) -> bool:
        return self.peek() in "*+?" or re.match(r"\{(\d+)(,(\d*))?\}|\{,", self.p[self.i :]) is not None

    def quantifier(self) -> tuple[int, int | None] | None:
        ch = self.peek()
        if ch in ("*", "+", "?") and ch:
            self.i += 1
            return {"*": (0, None), "+": (1, None), "?": (0, 1)}[ch]
        if ch == "{":
            if self.p.startswith("{,", self.i):
                self.refuse("'{,n}' is a quantifier in Python and a literal in ECMA")
            m = re.match(r"\{(\d+)(,(\d*))?\}", self.p[self.i :])
            if m:
                self.i += m.end()
                lo = int(m.group(1))
                hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
                if hi is not None and hi < lo:
                    self.refuse("quantifier {m,n} with n < m")
                return lo, hi
        return None

    def atom(self):
        ch = self.take()
        if ch == "(":
            return self.group()
        if ch == "[":
            return self.char_class()
        if ch == ".":
            return Chars(*_DOT)
        if ch in ("^", "$"):
            return Anchor(ch)
        if ch == "\\":
            return self.escape(in_class=False)
        if ch in ("*", "+", "?") or (ch == "{" and re.match(r"\{\d+(,\d*)?\}", self.p[self.i - 1 :])):
            self.refuse(f"nothing to repeat at offset {self.i - 1}")
        return literal(ch)

    def group(self):
        if self.peek() == "?":
            rest = self.p[self.i + 1 :]
            if rest.startswith(":"):
                self.i += 2
            elif re.match(r"P<\w+>", rest):
                self.i += 1 + rest.index(">") + 1
            elif re.match(r"<[A-Za-z_]\w*>", rest):
                self.i += 1 + rest.index(">") + 1
            elif rest[:1] in ("=", "!") or rest[:2] in ("<=", "<!"):
                self.refuse("lookaround")
            elif rest.startswith("P="):
                self.refuse("backreference")
            else:
                self.refuse("inline flags, comments, atomic or conditional groups")
        node = self.alternation()
        if self.take() != ")":
            self.refuse("missing ')'")
        return node

    def escape(self, in_class: bool):
        ch = self.take()
        if ch == "":
            self.refuse("trailing backslash")
        if ch in _CLASS_ESCAPES:
            return Chars(*_CLASS_ESCAPES[ch])
        if ch == "b" and in_class:
            return literal("\b")
        if ch in ("b", "B"):
            self.refuse("word boundary \\" + ch)
        if ch in _CHAR_ESCAPES:
            return literal(_CHAR_ESCAPES[ch])
        if ch == "0" and not self.peek().isdigit():
            return literal("\0")
        if ch.isdigit():
            self.refuse("backreference or octal escape \\" + ch)
        if ch in ("x", "u"):
            n = 2 if ch == "x" else 4
            hexs = self.p[self.i : self.i + n]
            if len(hexs) != n or not all(c in "0123456789abcdefABCDEF" for c in hexs):
                self.refuse(f"escape \\{ch} without {n} hex digits")
            self.i += n
            return literal(chr(int(hexs, 16)))
        if ch.isascii() and ch.isalnum():  # \A \Z \c \k \p \u{...} and friends: the dialects differ
            self.refuse("escape \\" + ch)
        return literal(ch)

    def char_class(self) -> Chars:
        negate = self.peek() == "^"
        if negate:
            self.i += 1
        if self.peek() == "]":
            self.refuse("character class starting with ']' (empty in ECMA, a literal in Python)")
        must: list = []
        may: list = []
        while True:
            if self.peek() == "":
                self.refuse("unterminated character class")
            if self.peek() == "]":
                self.i += 1
                break
            item = self.class_atom()
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.i += 1
                end = self.class_atom()
                if not (_single(item) and _single(end)):
                    self.refuse("class range with a class escape as an end")
                lo, hi = item.must[0][0], end.must[0][0]
                if lo > hi:
                    self.refuse("class range out of order")
                item = Chars(((lo, hi),), ((lo, hi),))
            must += item.must
            may += item.may
        if negate:
            return Chars(complement(norm(may)), complement(norm(must)))
        return Chars(norm(must), norm(may))

    def class_atom(self) -> Chars:
        ch = self.take()
        if ch == "\\":
            return self.escape(in_class=True)
        if ch == "[" and self.peek() in (":", ".", "="):
            self.refuse("POSIX-style class syntax")
        return literal(ch)


def _single(c: Chars) -> bool:
    return len(c.must) == 1 and c.must[0][0] == c.must[0][1] and c.must == c.may


def parse_pattern(pattern: str, where: str):
    """AST of `pattern` (Chars/Seq/Alt/Rep/Anchor); UnsupportedSchema names what we cannot translate.

    The pattern must compile with Python's `re` (jsonschema would raise on it otherwise).
    """
    if not isinstance(pattern, str):
        raise UnsupportedSchema(f"unsupported: pattern that is not a string (at {where})")
    try:
        re.compile(pattern)
    except re.error as e:
        why = f"Python's re rejects it: {e}"
        raise UnsupportedSchema(f"unsupported: pattern {pattern!r} ({why}) (at {where})") from None
    return _Parser(pattern, where).parse()
