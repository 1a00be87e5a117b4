"""String languages as sets: two patterns as one, and the strings a schema accepts, to be excluded (`not`).

Two `pattern`s that must both hold (allOf) are written as ONE pattern that Python's `re` evaluates as both:
`^(?=[\\s\\S]*?(?:P1))(?=[\\s\\S]*?(?:P2))`. `re.search` of it succeeds exactly when re.search(P1) and
re.search(P2) do (each lookahead tries every start position, `[\\s\\S]` also crossing newlines, and `^`/`$`
inside keep their meaning), so the validator, and schema_regex.py's enum filter, read the merged schema
right; string_patterns.py splits it back into P1 and P2 and intersects their languages (char_automaton.py).
The split is unambiguous: the first separator after which the head compiles on its own is where Python's
parser closes the head's group. Patterns with backreferences or named groups are not conjoined (numbering
and names would clash).

`search_superset` is the other side, for `not: {pattern}` (negation.py): an AST holding every string
re.search accepts, read on the `may` side (ecma_regex.py), padded where unanchored, and with a final `$`
also matching before a trailing newline, as in Python; excluding it is sound. It widens the pattern where
that keeps the exclusion small (long counts unbounded) or possible at all (word boundaries dropped): still
a superset, so what is generated outside it still fails the pattern.

`leading_negative_lookahead` reads the one lookaround shape real schemas use ("a name, but not one that
starts with org.bukkit."): `^(?!X)R` matches exactly the strings `^R` matches that no alternative of X
starts, so string_patterns.py generates `^R` and excludes `^X`'s strings through the same `not` machinery.
"""

from __future__ import annotations

import re

from constraints.ecma_regex import ANY, Alt, Anchor, Rep, Seq, literal, parse_pattern
from constraints.schema_errors import UnsupportedSchema

PREFIX = r"^(?=[\s\S]*?(?:"
SEP = r"))(?=[\s\S]*?(?:"
SUFFIX = "))"
_PAD = Rep(ANY, 0, None)
WIDEN_COUNT = 8  # search_superset: counted repetitions past this become unbounded (a superset)
_GROUP_REFS = re.compile(r"\\[1-9]|\(\?P[<=]|\(\?<[A-Za-z_]|\\k<|\\g<")


def _compiles(p: str) -> bool:
    try:
        re.compile(p)
    except re.error:
        return False
    return True


def split_conjunction(pattern: str) -> list[str]:
    """The patterns conjunction_pattern joined into `pattern` ([pattern] for any other pattern)."""
    if not (isinstance(pattern, str) and pattern.startswith(PREFIX) and pattern.endswith(SUFFIX)):
        return [pattern]
    body, out = pattern[len(PREFIX) : -len(SUFFIX)], []
    while True:
        i = body.find(SEP)
        while i >= 0 and not _compiles(body[:i]):
            i = body.find(SEP, i + 1)
        if i < 0:
            return out + [body] if _compiles(body) else [pattern]
        out.append(body[:i])
        body = body[i + len(SEP) :]


def conjunction_pattern(a: str, b: str, path: str) -> str:
    """One pattern that re.search matches exactly when both `a` and `b` do."""
    parts = list(dict.fromkeys(split_conjunction(a) + split_conjunction(b)))
    for p in parts:
        if not isinstance(p, str) or not _compiles(p) or _GROUP_REFS.search(p):
            raise UnsupportedSchema(
                f"unsupported: allOf with conflicting 'pattern' ({p!r} has groups or backreferences we "
                f"cannot conjoin) (at {path})"
            )
    if len(parts) == 1:
        return parts[0]
    return PREFIX + SEP.join(parts) + SUFFIX


def anchored_alternatives(pattern: str, where: str) -> list[tuple[list, bool, bool]]:
    """Per top-level alternative of `pattern`: (items without the edge anchors, starts with ^, ends with $).

    `^`/`$` anywhere else are refused by name."""
    top = parse_pattern(pattern, where)
    out = []
    for alt in top.items if isinstance(top, Alt) else (top,):
        items = list(alt.items) if isinstance(alt, Seq) else [alt]
        start = end = False
        while items and items[0] == Anchor("^"):
            items, start = items[1:], True
        while items and items[-1] == Anchor("$"):
            items, end = items[:-1], True
        if any(_has_anchor(x) for x in items):
            raise UnsupportedSchema(f"unsupported: pattern {pattern!r} (an anchor inside) (at {where})")
        out.append((items, start, end))
    return out


def _has_anchor(n) -> bool:
    if isinstance(n, Anchor):
        return True
    if isinstance(n, (Seq, Alt)):
        return any(_has_anchor(x) for x in n.items)
    return isinstance(n, Rep) and _has_anchor(n.item)


def search_superset(pattern: str, where: str):
    """An AST whose language holds every string re.search(pattern, .) accepts (read on the `may` side).
    Word boundaries are dropped first: without an assertion a pattern matches more, never less; and long
    counted repetitions are widened (`_widened`) so excluding the language stays a small automaton."""
    alts = []
    for items, start, end in anchored_alternatives(_without_word_boundaries(pattern), where):
        tail = [Rep(literal("\n"), 0, 1)] if end else [_PAD]
        alts.append(Seq(tuple(([] if start else [_PAD]) + [_widened(x) for x in items] + tail)))
    return alts[0] if len(alts) == 1 else Alt(tuple(alts))


def _widened(n):
    """`n` with each repetition counted past WIDEN_COUNT made unbounded from at most WIDEN_COUNT copies on:
    a superset (`x{1,256}` becomes `x{1,}`), which needs a few automaton states instead of hundreds."""
    if isinstance(n, Rep):
        item = _widened(n.item)
        if n.hi is None or n.hi > WIDEN_COUNT:
            return Rep(item, min(n.lo, WIDEN_COUNT), None)
        return Rep(item, n.lo, n.hi)
    if isinstance(n, (Seq, Alt)):
        return type(n)(tuple(_widened(x) for x in n.items))
    return n


def literals(values: list[str]):
    seqs = [Seq(tuple(literal(ch) for ch in v)) for v in values]
    return seqs[0] if len(seqs) == 1 else Alt(tuple(seqs))


def _tokens(pattern: str) -> list[tuple[int, str, bool]]:
    """(offset, text, inside a character class) of each escape (two characters) or single character, for
    patterns Python's `re` has compiled; a class's opening `[` and closing `]` count as outside it."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append((i, pattern[i : i + 2], in_class))
            i += 2
            continue
        if in_class and c == "]":
            in_class = False
        elif not in_class and c == "[":
            out.append((i, c, False))
            i, in_class = i + 1, True
            for lead in ("^", "]"):  # a leading ']' (after an optional '^') is a literal in the class
                if pattern[i : i + 1] == lead:
                    out.append((i, lead, True))
                    i += 1
            continue
        out.append((i, c, in_class))
        i += 1
    return out


def _top_level(pattern: str) -> list[tuple[int, str]]:
    """(offset, char) of each `(`, `)` and `|` outside escapes and character classes (the caller tracks
    the nesting)."""
    return [(i, t) for i, t, in_class in _tokens(pattern) if not in_class and t in ("(", ")", "|")]


def leading_negative_lookahead(pattern: str) -> tuple[str, list[str]] | None:
    """For `^(?!X)R` with no top-level `|` in R: ("^R", ["^X1", "^X2", ...]) for X's alternatives (a
    leading `^` inside X is implied); None for any other pattern."""
    if not (isinstance(pattern, str) and pattern.startswith("^(?!") and _compiles(pattern)):
        return None
    depth, close, alts, start = 0, None, [], len("^(?!")
    for i, c in _top_level(pattern):
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                close = i
                break
        elif depth == 1:
            alts.append(pattern[start:i])
            start = i + 1
    if close is None:
        return None
    alts.append(pattern[start:close])
    rest = pattern[close + 1 :]
    depth = 0
    for _, c in _top_level(rest):
        depth += {"(": 1, ")": -1}.get(c, 0)
        if c == "|" and depth == 0:
            return None  # the lookahead guards only the first alternative
    return "^" + rest, ["^" + a.removeprefix("^") for a in alts]


def _without_word_boundaries(pattern: str) -> str:
    """`pattern` without its `\\b` / `\\B` assertions (a `\\b` inside a class is a backspace: kept); the
    pattern itself when dropping them would not compile (a quantified assertion, say)."""
    kept = [t for _, t, in_class in _tokens(pattern) if in_class or t not in ("\\b", "\\B")]
    dropped = "".join(kept)
    return dropped if dropped != pattern and _compiles(dropped) else pattern
