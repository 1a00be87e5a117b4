"""constraints/composed_dfa.py `_Regex`: the vectorised scan against the Python scan it replaced.

`reference_scan` is the committed `_Regex.__init__` before the change (a loop over every special character,
0.2-0.4 s on a 1.3M-character schema regex), kept here as the spec: the scan must find the same group and
class spans, the same depth and the same Opaque errors, the first one in the text. One deliberate change:
a ')' with no '(' made the loop fail with IndexError (list.pop), the scan says Opaque("unbalanced regex"),
as for a '(' with no ')'. Inputs: hand-written regexes for each rule (nested classes, literal ']', escapes,
non-ASCII characters before groups so that byte and character indices differ), random well-formed regexes,
and the same with random specials inserted (so that every kind of error comes first somewhere).
"""

from __future__ import annotations

import random
import re

import pytest

from constraints import composed_dfa as cd

_SPECIAL = re.compile(r"\\.|[\[\]()^$]", re.S)


def reference_scan(text: str) -> tuple[dict[int, int], dict[int, int], int]:
    """The loop of the committed _Regex.__init__: (close, class_end, depth)."""
    close: dict[int, int] = {}
    class_end: dict[int, int] = {}
    stack: list[int] = []
    cls: list[int] = []
    depth = 0
    for m in _SPECIAL.finditer(text):
        tok, i = m.group(), m.start()
        if tok[0] == "\\":
            if not cls and tok[1:] in ("b", "B", "A", "z"):
                raise cd.Opaque(f"word boundary or anchor {tok!r}")
            continue
        if cls:
            if tok == "[":
                cls.append(i)
            elif tok == "]" and i != cls[-1] + 1 and not (i == cls[-1] + 2 and text[i - 1] == "^"):
                start = cls.pop()
                if not cls:
                    class_end[start] = i + 1
            continue
        if tok == "[":
            cls.append(i)
        elif tok in "^$":
            raise cd.Opaque(f"anchor {tok!r}")
        elif tok == "(":
            if text.startswith("(?", i) and not text.startswith(("(?:", "(?P<", "(?<"), i):
                raise cd.Opaque("inline flags")
            stack.append(i)
            depth = max(depth, len(stack))
        elif tok == ")":
            close[stack.pop()] = i
    if stack or cls:
        raise cd.Opaque("unbalanced regex")
    return close, class_end, depth


def outcome(scan, text: str):
    """What a scan makes of `text`: its spans as dicts and depth, or its error."""
    try:
        got = scan(text)
    except cd.Opaque as err:
        return ("Opaque", str(err))
    except IndexError:  # the reference's stray ')'
        return ("Opaque", "unbalanced regex")
    if isinstance(got, tuple):
        return got
    close = {i: int(got.close[i]) for i in got.opens.tolist()}
    class_end = {i: int(got.class_end[i]) for i in got.class_end.nonzero()[0].tolist()}
    assert got.opens.tolist() == sorted(close) and got.close.size == got.class_end.size == len(text)
    return close, class_end, got.depth


def assert_same(text: str):
    assert outcome(cd._Regex, text) == outcome(reference_scan, text), text


HAND = [
    "",
    "abc",
    "(a)(b(c))",
    "(?:a|b)(?P<n>c)(?<m>d)",
    "[[a]]",
    "[]a]",
    "[^]a]",
    "[a[b]c]d",
    "[a[^]b]c]d",
    "[[]]]",
    "[^[^]]]x",
    "[()^$]",
    "[\\b\\B\\A\\z]",
    "[[:alpha:]](x)",
    "\\[(a)\\]",
    "\\(\\)",
    "\\\\(a)",
    "\\\\\\(a\\\\)",
    "\\x5b(a)",
    "\\u{5b}(a)",
    "\\p{L}(a)\\P{Greek}",
    "\\^\\$",
    "[\\]](a)",
    "[a\\[^]]",
    "é😀(a(ü)[é]😀)",
    "é😀[😀(]([é])",
    "(?:é(?:😀(?:ü)))",
    "\ud800(a)[\udfff]",  # lone surrogates (a JSON schema's "\\ud800" reads as one)
    "a\\",
    "(a)\\",
    "[a]\\",
    # errors, each kind, and the first of several in the text
    "(a",
    "a)",
    "(a))",
    "[a",
    "[[a]",
    "[]",
    "[^]",
    "a]",
    "^a",
    "a$",
    "é😀$",
    "a\\bb",
    "a\\B",
    "\\Aab",
    "ab\\z",
    "é(?i)a",
    "(?i:a)",
    "(?=a)",
    "(?!a)",
    "(?Pa)",
    "(?",
    "(?P",
    "a)^",
    "^a)",
    "(?i)\\b$",
    "\\b(?i)$",
    "$\\b",
    "[a]^[b]",
    "[^a](^)",
    "(a\\b)",
    "((a)",
    "[a]]]",
    "\\\\b",
    "\\\\\\b",
]


@pytest.mark.parametrize("text", HAND)
def test_hand_written(text):
    assert_same(text)


def test_hand_written_errors_are_found():
    """The hand list reaches every message (a stray ')' included)."""
    messages = {outcome(cd._Regex, t)[1] for t in HAND if outcome(cd._Regex, t)[0] == "Opaque"}
    assert {"unbalanced regex", "inline flags", "anchor '^'", "anchor '$'"} <= messages
    assert {"word boundary or anchor " + repr("\\" + c) for c in "bBAz"} <= messages


_CHARS = ["a", "b", "é", "😀", "ü", "?", ":", "<", ">", "P", "|", "*", "{2}", "-", "^", "$", "(", ")"]
_ESCAPES = ["\\[", "\\]", "\\(", "\\)", "\\\\", "\\x5b", "\\u{5b}", "\\p{L}", "\\^", "\\$", "\\.", "\\d"]


def random_class(rng: random.Random, depth: int) -> str:
    """A Rust-style class: '^' and a literal ']' first at times, nested classes, any text inside."""
    head = rng.choice(["[", "[", "[^", "[]", "[^]"])
    parts = []
    for _ in range(rng.randint(0, 4)):
        r = rng.random()
        if r < 0.2 and depth > 0:
            parts.append(random_class(rng, depth - 1))
        elif r < 0.45:
            parts.append(rng.choice(_ESCAPES + ["\\b", "\\A", "\\z", "\\B"]))
        else:
            parts.append(rng.choice(_CHARS))
    if head in ("[", "[^") and (not parts or head + parts[0] == "[^"):
        parts.insert(0, "a")  # '[]' and '[^]' would read the next ']' as a literal
    return head + "".join(parts) + "]"


def random_regex(rng: random.Random, depth: int) -> str:
    """A well-formed regex: groups of every kind, classes, escapes, non-ASCII text, quantifiers."""
    parts = []
    for _ in range(rng.randint(1, 4)):
        r = rng.random()
        if r < 0.35 and depth > 0:
            opener = rng.choice(["(", "(?:", "(?P<n>", "(?<n>"])
            parts.append(opener + random_regex(rng, depth - 1) + ")" + rng.choice(["", "?", "+", "{1,3}"]))
        elif r < 0.55:
            parts.append(random_class(rng, 2))
        elif r < 0.75:
            parts.append(rng.choice(_ESCAPES))
        else:
            parts.append(rng.choice(["a", "é", "😀", "ü", "|", "b", "x", "\\\\"]))
    return "".join(parts)


_INSERTS = ["(", ")", "[", "]", "^", "$", "\\b", "\\B", "\\A", "\\z", "(?i)", "(?", "\\", "\\\\", "[^", "é"]


def test_random_well_formed_regexes():
    rng = random.Random(11)
    ok = 0
    for _ in range(1500):
        text = random_regex(rng, 4)
        assert_same(text)
        ok += outcome(cd._Regex, text)[0] != "Opaque"
    assert ok > 1000  # mostly well formed: the spans are compared, not only the errors


def test_random_regexes_with_specials_inserted():
    rng = random.Random(12)
    messages = set()
    for _ in range(1500):
        text = random_regex(rng, 3)
        for _ in range(rng.randint(1, 3)):
            i = rng.randint(0, len(text))
            text = text[:i] + rng.choice(_INSERTS) + text[i:]
        assert_same(text)
        got = outcome(cd._Regex, text)
        messages.add(got[1] if got[0] == "Opaque" else "ok")
    assert len(messages) >= 9  # well formed, unbalanced, flags, two anchors, four boundaries


def test_random_character_soup():
    """Short strings over the special characters alone: every corner of the class and escape rules."""
    rng = random.Random(13)
    alphabet = ["[", "]", "^", "(", ")", "\\", "?", ":", "P", "<", "b", "a", "é", "$"]
    for _ in range(4000):
        assert_same("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 10))))


def test_long_regex():
    """Tens of thousands of groups and classes, deep nesting: indices stay exact at scale."""
    rng = random.Random(14)
    text = "".join(f"(?:{random_regex(rng, 5)})" for _ in range(2000))
    text = "(" * 300 + text + ")" * 300
    assert len(text) > 100_000
    assert_same(text)
    assert cd._Regex(text).depth > 300


def test_lookups_where_nothing_opens():
    """The composer reads spans at openings only; elsewhere the lookups fail as the dicts' did (KeyError)."""
    rx = cd._Regex("a(b[c[d]])\\\\(e)")  # an escaped backslash, then a group
    assert rx.group_close(1) == 9 and rx.class_stop(3) == 9 and rx.group_close(12) == 14
    for i in (0, 2, 5, 11):
        with pytest.raises(KeyError):
            rx.group_close(i)
    for i in (1, 5):
        with pytest.raises(KeyError):
            rx.class_stop(i)
