"""constraints/composed_dfa.py: a regex built part by part has the language outlines-core gives it whole.

The parts are made tiny here (LEAF_CHARS patched down) so that every group, alternation and quantifier of
these small regexes goes through the composition; each result is compared with outlines-core's automaton of
the whole regex, byte for byte (breadth-first over the product of the two automata)."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest

from constraints import byte_automaton as ba
from constraints import composed_dfa as cd
from constraints import regex_atoms as ra
from constraints.schema_regex import schema_to_regex
from constraints.walks import dfa_accepts
from tests.constraints.test_byte_automaton import same_language, unminimised


def composed(regex: str) -> tuple[np.ndarray, np.ndarray]:
    return ba._trim(*cd.compose(regex, ba.leaf_dfa, lambda d: ba.minimise_classes(*d)))


HAND = [
    "(?:ab|ac|a)(?:c|cd)?d",  # alternatives sharing prefixes, an optional that overlaps what follows
    "(?:(?:ab|a)c){2,4}x",
    "(?:a|bc)*(?:bc|c)",  # a loop whose exit overlaps its body
    "(?:a?)*b(?:c?d?)+",  # nullable bodies inside loops
    "(?:x(?:y|z){0,3}){1,}w?",
    "(?P<name>ab)(?<n2>c|d){2}",  # named groups read as plain ones
    "[()|]+\\(\\)(?:[\\]a]|\\[)*",  # parentheses and bars inside classes and escaped
    "(?:é|è|e)+(?:ü{2}|u)",  # non-ASCII literals
    "(?:a+?|b??)c*?",  # lazy quantifiers: same language
    "(?:\\x41|\\u{42}|\\p{Greek}){1,2}",
    "(?:)a(?:|b)",  # empty alternatives
    ra.object_body([(f'"k{i}":{v}', False) for i, v in enumerate([ra.INTEGER, ra.BOOLEAN, '"x"'])], ",[ ]?"),
]


@pytest.fixture
def tiny_parts(monkeypatch):
    monkeypatch.setattr(cd, "LEAF_CHARS", 3)


@pytest.mark.parametrize("regex", HAND)
def test_composed_language_equals_outlines(tiny_parts, regex):
    delta, final = composed(regex)
    ref = unminimised(regex)
    assert same_language(delta, final, *ref)
    assert final.size == ba.byte_dfa(regex)[1].size  # both minimal: the same number of states


def random_regex(rng: random.Random, depth: int) -> str:
    """A random regex over a 4-letter alphabet: groups, alternation, every quantifier kind."""
    if depth == 0 or rng.random() < 0.25:
        return rng.choice(["a", "b", "ab", "[bc]", "c", "\\.", "é"])
    parts = [random_regex(rng, depth - 1) for _ in range(rng.randint(1, 3))]
    text = "|".join(parts) if rng.random() < 0.4 else "".join(f"(?:{p})" for p in parts)
    q = rng.choice(["", "", "?", "*", "+", "{2}", "{0,2}", "{1,}", "??"])
    return f"(?:{text}){q}"


def test_random_regexes(monkeypatch):
    monkeypatch.setattr(cd, "LEAF_CHARS", 6)
    rng = random.Random(7)
    for _ in range(60):
        regex = random_regex(rng, 4)
        assert same_language(*composed(regex), *unminimised(regex)), regex


def test_schema_regexes_from_the_shipped_sample(monkeypatch):
    import json
    from pathlib import Path

    from constraints.schema_errors import UnsupportedSchema

    monkeypatch.setattr(cd, "LEAF_CHARS", 120)
    checked = 0
    for f in sorted((Path(__file__).parent / "data" / "glaive_sample").glob("*.json")):
        try:
            regex = schema_to_regex(json.loads(f.read_text()))
        except UnsupportedSchema:
            continue
        delta, final = composed(regex)
        assert same_language(delta, final, *unminimised(regex)), f.name
        checked += 1
    assert checked >= 15


def test_a_composed_build_is_the_same_table_however_it_is_cut(monkeypatch):
    """byte_automaton.py numbers a composed build breadth-first: the parts (LEAF_CHARS) change how it is
    built, never the table (delta and final, byte for byte), nor does the compiled or reference way."""
    import json
    from pathlib import Path

    regex = schema_to_regex(json.loads((Path(__file__).parent / "data" / "not_oneof_allof" /
                                        "Github_hard_o1051.json").read_text()))
    monkeypatch.setattr(ba, "COMPOSE_CHARS", 1_000)
    tables = []
    for leaf_chars in (2_000, 250, 40):
        monkeypatch.setattr(cd, "LEAF_CHARS", leaf_chars)
        tables.append(ba.byte_dfa(regex))
    monkeypatch.setattr(ba, "compiled_steps", lambda: ba.REFERENCE_STEPS)
    tables.append(ba.byte_dfa(regex))
    for delta, final in tables[1:]:
        assert np.array_equal(delta, tables[0][0]) and np.array_equal(final, tables[0][1])
    assert same_language(*tables[0], *ba.minimise(*unminimised(regex)))


def test_a_counted_group_in_a_short_part_is_built_apart(monkeypatch):
    """A short part holding a group of APART or more copies (a bounded string in a small optional group) is
    split around it: the counted group is one leaf, built once for all its uses and inside no other leaf
    (outlines-core spends ~45 us a state copying it), and the language is outlines-core's."""
    monkeypatch.setattr(cd, "LEAF_CHARS", 60)
    counted = ra.COUNTED_CHAR + "{1,40}"  # (a class with \\x00 in it would meet the end sentinel)
    string = f'"{counted}"'
    regex = (
        f'\\{{(?:"a":{string},)?(?:"b":\\[{string}(?:,{string}){{0,3}}\\],)?'
        f'(?:"q":x\\){{40}},)?"c":(?:{string}|[0-9]{{1,2}})\\}}'  # an escaped ')' counted: no group
    )
    rx = cd._Regex(regex)
    opens = cd._counted_groups(rx)
    assert [regex[i : rx.group_close(i) + 7] for i in opens] == [counted] * regex.count(counted)
    leaves = []

    def leaf(text):
        leaves.append(text)
        return ba.leaf_dfa(text)

    delta, final = ba._trim(*cd.compose(regex, leaf, lambda d: ba.minimise_classes(*d)))
    assert same_language(delta, final, *unminimised(regex))
    assert leaves.count(counted) == 1 and not any(counted in t for t in leaves if t != counted)


@pytest.mark.parametrize("regex", ["(?i:ab)c", "a(?i)b", "^ab", "a$", "a\\bb", "\\Aab"])
def test_context_dependent_syntax_is_not_composed(regex):
    with pytest.raises(cd.Opaque):
        cd.compose(regex, ba.leaf_dfa, lambda d: ba.minimise_classes(*d))


def test_past_the_nesting_limit_of_outlines_core():
    """100 optional fields in a row nest 300 deep: outlines-core refuses the regex, composing splits it."""
    fields = [(f'"k{i}":[0-9]', False) for i in range(100)]
    regex = ra.object_body(fields, ",")
    with pytest.raises(ValueError):
        ba._outlines_dfa(regex)
    delta, final = ba.byte_dfa(regex)

    def accepts(text: str) -> bool:
        return dfa_accepts(delta, final, text)

    assert accepts("{}") and accepts('{"k0":1}') and accepts('{"k3":1,"k50":2,"k99":3}')
    assert not accepts('{"k50":2,"k3":1}') and not accepts('{"k3":1,}') and not accepts('{"k100":1}')


def test_large_repeated_parts_build_faster_than_whole():
    """The nested value is written twice at each of 6 levels: outlines-core determinises 31k states, the
    composition builds each copy once (1.6k states; 0.2 s against 0.8 s on the 2-core box, 2026-12-07)."""
    leaf = {"type": "string", "maxLength": 8}
    s: dict = leaf
    for d in range(6):
        s = {"type": "object", "properties": {f"p{d}_{i}": (s if i == 3 else leaf) for i in range(4)}}
    regex = schema_to_regex(s)
    assert len(regex) > ba.COMPOSE_CHARS
    t0 = time.process_time()
    delta, final = ba.byte_dfa(regex)
    t_composed = time.process_time() - t0
    t0 = time.process_time()
    ref = ba._trim(*ba.minimise(*ba._outlines_dfa(regex)))
    t_whole = time.process_time() - t0
    assert same_language(delta, final, *ref) and final.size == ref[1].size
    assert t_composed < t_whole / 2
