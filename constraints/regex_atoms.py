"""Regex building blocks for JSON text: literals, strings, integer/number ranges, formats, object bodies.

Every pattern here describes a *subset* of what the matching JSON Schema keyword accepts, never a superset:
the generator may only produce values that validate (pydantic / jsonschema with format checking). Patterns
are written for outlines-core's regex engine (Rust `regex` syntax, leftmost-first alternation, full match),
so alternatives that could end a match are ordered longest first.
"""

from __future__ import annotations

import json

# Optional single space after ':' and ',' (json.dumps style) and nowhere else: enough freedom for a model to
# use its natural tokens without inflating the automaton.
WS = "[ ]?"

# One JSON string character: any Unicode scalar except '"', '\\' and C0 controls, or a simple escape.
# \uXXXX escapes are left out on purpose: a lone surrogate would decode to a string pydantic rejects.
STRING_CHAR = r'(?:[^"\\\x00-\x1f]|\\["\\/bfnrt])'
# STRING_CHAR without the escaped quote, for counted repetitions: outlines-core's automaton build is
# exponential in the count of `"(?:...|\\"){0,n}"` (n=18 takes 33 s), linear without `\"` (n=1024: 0.4 s).
COUNTED_CHAR = r'(?:[^"\\\x00-\x1f]|\\[\\/bfnrt])'

# Digit caps: Python refuses to parse ints over 4,300 digits, and 1e999 parses as inf; keep values sane.
MAX_INT_DIGITS = 16
INTEGER = rf"-?(?:[1-9][0-9]{{0,{MAX_INT_DIGITS - 1}}}|0)"
NUMBER = INTEGER + r"(?:\.[0-9]+)?(?:[eE][+-]?[0-9]{1,2})?"
BOOLEAN = "(?:true|false)"
NULL = "null"

_META = set("\\.+*?()|[]{}^$#&-~")


def escape(text: str) -> str:
    """Escape `text` to match itself literally in the Rust regex syntax."""
    return "".join("\\" + ch if ch in _META else ch for ch in text)


def json_literal(value: object) -> str:
    """Regex matching `value` serialised compactly as JSON (non-ASCII kept as UTF-8)."""
    return escape(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def string_pattern(min_len: int = 0, max_len: int | None = None) -> str:
    """A quoted JSON string whose decoded length (code points, as jsonschema/pydantic count) is in range."""
    if max_len is None:  # the counted minimum without quote escapes (COUNTED_CHAR), then free
        return f'"{COUNTED_CHAR}{{{min_len}}}{STRING_CHAR}*"' if min_len else f'"{STRING_CHAR}{{0,}}"'
    if max_len == min_len:
        return f'"{COUNTED_CHAR}{{{min_len}}}"'
    return f'"{COUNTED_CHAR}{{{min_len},{max_len}}}"'


def _same_length(lo: str, hi: str) -> list[str]:
    """Alternatives matching exactly the decimal strings of one length n in [lo, hi] (no leading zeros)."""
    n = len(lo)
    if lo == hi:
        return [lo]
    if n == 1:
        return [f"[{lo}-{hi}]"]
    if lo[0] == hi[0]:
        return [lo[0] + _group(_same_length(lo[1:], hi[1:]))]
    if set(lo[1:]) == {"0"} and set(hi[1:]) == {"9"}:
        return [_digits(int(lo[0]), int(hi[0])) + _any_digits(n - 1)]
    out = [lo[0] + _group(_same_length(lo[1:], "9" * (n - 1)))]
    a, b = int(lo[0]) + 1, int(hi[0]) - 1
    if a <= b:
        out.append(_digits(a, b) + _any_digits(n - 1))
    out.append(hi[0] + _group(_same_length("0" * (n - 1), hi[1:])))
    return out


def _digits(a: int, b: int) -> str:
    return str(a) if a == b else f"[{a}-{b}]"


def _any_digits(n: int) -> str:
    return "[0-9]" if n == 1 else f"[0-9]{{{n}}}"


def _group(alts: list[str]) -> str:
    return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"


def _nonneg_range(lo: int, hi: int | None) -> list[str]:
    """Alternatives for the integers in [lo, hi] (hi None: up to MAX_INT_DIGITS digits), longest first."""
    cap = 10**MAX_INT_DIGITS - 1
    hi = cap if hi is None else min(hi, cap)
    alts: list[str] = []
    for n in range(len(str(lo)), len(str(hi)) + 1):
        a, b = max(lo, 10 ** (n - 1) if n > 1 else 0), min(hi, 10**n - 1)
        if a <= b:
            alts.extend(_same_length(str(a), str(b)))
    return alts[::-1]


def integer_range(lo: int | None, hi: int | None) -> str:
    """Regex for exactly the JSON integers in [lo, hi] (None: unbounded on that side, capped in digits)."""
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"empty integer range [{lo}, {hi}]")
    if lo is None and hi is None:
        return INTEGER
    alts: list[str] = []
    if hi is None or hi >= 0:  # the non-negative part
        alts += _nonneg_range(max(lo, 0) if lo is not None else 0, hi)
    if lo is None or lo < 0:  # the negative part, as '-' + magnitude in [max(1, -hi), -lo]
        mag = _nonneg_range(max(1, -hi) if hi is not None else 1, -lo if lo is not None else None)
        alts.append("-" + _group(mag))
    return _group(alts)


def number_range(lo: float | None, hi: float | None, lo_excl: bool, hi_excl: bool) -> str:
    """JSON numbers within bounds. Exact for integer-valued output; fractions only where provably inside.

    Integer parts come from [ceil(lo), floor(hi)] (tightened for exclusive bounds). A fraction is allowed
    after a non-negative integer part I when I + 1 <= the upper bound, since I.f lies in [I, I + 1).
    """
    import math

    ilo = (
        None if lo is None else (math.floor(lo) + 1 if lo_excl and float(lo).is_integer() else math.ceil(lo))
    )
    ihi = (
        None if hi is None else (math.ceil(hi) - 1 if hi_excl and float(hi).is_integer() else math.floor(hi))
    )
    if ilo is not None and ihi is not None and ilo > ihi:
        raise ValueError(f"no integer-valued number in the range ({lo}, {hi})")
    whole = integer_range(ilo, ihi)
    frac_lo = max(ilo, 0) if ilo is not None else 0
    frac_hi = None
    if hi is not None:
        # I.f < I + 1 <= hi (or < hi when exclusive and hi == I + 1 still fine since I.f < I + 1)
        frac_hi = math.floor(hi) - 1
    if frac_hi is not None and frac_hi < frac_lo:
        return whole
    frac = _group(_nonneg_range(frac_lo, frac_hi)) + r"\.[0-9]{1,6}"
    return f"(?:{frac}|{whole})"


# Formats checked by jsonschema's FormatChecker (or pydantic) that we generate. Each is a strict subset:
# days 01-28 only (every month has them), times without leap seconds.
_D2 = "[0-9]{2}"
_DATE = r"(?:19|20)[0-9]{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
_OFFSET = r"(?:Z|[+-](?:0[0-9]|1[0-2]):[0-5][0-9])"
_EMAIL = r"[a-z0-9]{1,20}(?:\.[a-z0-9]{1,20}){0,2}@[a-z0-9]{1,20}(?:\.[a-z0-9]{1,20}){0,2}\.[a-z]{2,6}"
_HEX = "[0-9a-f]"
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
FORMATS: dict[str, str] = {
    "date": _DATE,
    "time": _TIME + _OFFSET,
    "date-time": _DATE + "T" + _TIME + _OFFSET,
    "email": _EMAIL,
    "idn-email": _EMAIL,
    "uuid": f"{_HEX}{{8}}-{_HEX}{{4}}-4{_HEX}{{3}}-[89ab]{_HEX}{{3}}-{_HEX}{{12}}",
    "ipv4": rf"(?:{_OCTET}\.){{3}}{_OCTET}",
}
# Formats a validator checks that we cannot generate: refuse rather than risk invalid output.
CHECKED_FORMATS = {
    "idn-hostname",
    "ipv6",
    "json-pointer",
    "regex",
    "relative-json-pointer",
    "hostname",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uri-template",
    "duration",
    "color",
}


def object_body(fields: list[tuple[str, bool]], sep: str) -> str:
    """Fields in order; required ones always present, optional ones optional, commas only between.

    All optional: "some non-empty subsequence, comma-joined" is built field by field as
    N(1..k) = N(1..k-1)(sep f_k)? | f_k, so each field is written at most twice. Choosing the first present
    field instead (f_i followed by every later field optional, for each i) writes field k k times: quadratic
    in the fields, and multiplied again at every nesting level (a Kubernetes schema: 421 kB of regex and
    142k automaton states, against 41 kB and 14k this way).
    """
    if not fields:
        return r"\{\}"
    # the pieces of the text in order, joined once at the end: each field's text is copied only into the
    # result (the fields of a nested object are the whole text below it: a copy per f-string, per partial
    # join and per concatenation was 0.2 s of a 1.8M-character schema's translation)
    out = [r"\{"]
    req = [i for i, (_, r) in enumerate(fields) if r]
    if req:
        first = req[0]
        for f, _ in fields[:first]:
            out += ("(?:", f, sep, ")?")
        out.append(fields[first][0])
        for f, r in fields[first + 1 :]:
            out += (sep, f) if r else ("(?:", sep, f, ")?")
    else:  # all optional: "(?:N)?", N the non-empty sequences (pattern_properties.py relies on this form)
        # N(1..k) unrolled: k-1 opening groups, f_1, then "(?:sep f_j)?|f_j)" for each later field (building
        # it by repeated wrapping copies the whole text per field: quadratic)
        out += ("(?:", "(?:" * (len(fields) - 1), fields[0][0])
        for f, _ in fields[1:]:
            out += ("(?:", sep, f, ")?|", f, ")")
        out.append(")?")
    out.append(r"\}")
    return "".join(out)
