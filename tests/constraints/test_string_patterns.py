"""Issue 24: `pattern`, `patternProperties` and `format` (with length bounds) are enforced exactly, alone
and together (a pattern with a format, two patterns under allOf: their languages intersected by
char_automaton.py, whose product and complement are checked here against Python's `re` itself).

Every feature: the byte automaton rejects known-invalid instances and accepts valid ones, random walks over
it (>= 100 per schema) all validate with jsonschema (formats checked), and what stays unsupported is refused
naming the keyword and its JSON pointer.
"""

from __future__ import annotations

import itertools
import json
import re
import time

import jsonschema
import pytest

from constraints import ecma_regex as er
from constraints.char_automaton import combine
from constraints.schema_regex import UnsupportedSchema, schema_to_regex, strict_validator
from constraints.string_patterns import FORMATS, emit, pattern_node
from constraints.string_sets import conjunction_pattern, search_superset, split_conjunction
from constraints.walks import byte_accepts as accepts
from constraints.walks import byte_walks
from tests.constraints.conftest import assert_walks_valid as walks_valid

WALKS = 120


def assert_walks_valid(schema: dict, n: int = WALKS) -> list:
    return walks_valid(schema, n, max_len=120)


def s(pattern: str, **kw) -> dict:
    return {"type": "string", "pattern": pattern, **kw}


# --- pattern: exact accept / reject --------------------------------------------------------------------
# (schema, JSON texts the automaton must accept, JSON texts it must reject)
EXACT = {
    "anchored_class": (s("^[a-z]+$"), ['"abc"'], ['"abC"', '""', '"ab1"']),
    "unanchored": (s("ab+c"), ['"xxabbc yy"', '"abc"'], ['"ac"', '"xyz"']),
    "start_anchor_only": (s("^id-"), ['"id-7"', '"id-"'], ['"xid-"']),
    "end_anchor_only": (s(r"\.png$"), ['"a.png"'], ['"a.pngx"', '"apng"']),
    "counts_digits": (s(r"^\d{3}-\d{2,4}$"), ['"123-45"', '"123-4567"'], ['"12-45"', '"123-45678"']),
    "alternation": (s("^(cat|dog)s?$|^x$"), ['"cats"', '"dog"', '"x"'], ['"cow"', '"xx"', '"catdog"']),
    "json_escaped": (s(r'^a"b\\c/$'), [r'"a\"b\\c/"', r'"a\"b\\c\/"'], [r'"a\"bc/"', '"ab"']),
    "negated_class": (s(r"^[^a-c]{2}$"), ['"xy"', r'"\n\""'], ['"ax"', '"x"']),
    "dot_no_newline": (s("^a.b$"), ['"a-b"', '"a\\tb"'], ['"a\\nb"', '"a\\rb"', '"ab"']),
    "lazy_and_groups": (s(r"^(?:ab)+?(c)??$"), ['"ab"', '"ababc"'], ['"abcc"', '"a"']),
    "unicode_escape": (s(r"^\u00e9\x41$"), ['"éA"'], ['"eA"']),
    "count_capped": (s("^a{2,100000}$"), ['"aa"', '"' + "a" * 64 + '"'], ['"a"', '"' + "a" * 65 + '"']),
    "length_and_pattern": (s("^[a-z]+$", minLength=2, maxLength=3), ['"ab"', '"abc"'], ['"a"', '"abcd"']),
    "padding_within_length": (s("abc", maxLength=5), ['"abc"', '"abc12"'], ['"abc123"', '"12abc3"']),
    # a pattern together with a format: both languages at once
    "pattern_and_uri": (s("^https://", format="uri"), ['"https://ab.cd/x"'], ['"http://ab.cd"', '"https:x"']),
    "pattern_and_date": (
        s("^([0-9]{4})(-([0-9]{2}))?(-([0-9]{2}))?$", format="date"),
        ['"2020-01-05"'],
        ['"2020"', '"2020-01"'],  # the pattern's, but not dates
    ),
    "pattern_and_format_lengths": (s("^[a-c]", format="email", maxLength=12), ['"ab@cd.ef"'], ['"x@cd.ef"']),
    "two_patterns_all_of": ({"allOf": [s("^a"), {"pattern": "b$"}]}, ['"ab"', '"a-b"'], ['"a"', '"ba"']),
    "two_patterns_and_lengths": (
        {"allOf": [s("^a", minLength=3), {"pattern": "b$", "maxLength": 4}]},
        ['"axb"', '"axxb"'],
        ['"ab"', '"axxxb"'],
    ),
}


def accepts_exactly(name: str, schema, good: list[str], bad: list[str]) -> None:
    """The constraint accepts every `good` (each valid) and none of `bad` (invalid, or valid but outside
    the generated subset)."""
    rx = schema_to_regex(schema)
    v = strict_validator(schema)
    for text in good:
        assert v.is_valid(json.loads(text)), text  # the example itself is right
        assert accepts(rx, text), (name, text)
    for text in bad:
        assert not accepts(rx, text), (name, text)


@pytest.mark.parametrize("name", sorted(EXACT))
def test_pattern_exact(name):
    accepts_exactly(name, *EXACT[name])
    assert_walks_valid(EXACT[name][0])


WALK_SCHEMAS = [
    s(r"^[A-Z][\w .-]*$", maxLength=12),
    s(r"\D\W\S\s"),
    s(r"^[^\d\s]+[\d]*$"),
    s(r"^(\+|-)?\d+(\.\d+)?([eE][+-]?\d+)?$", minLength=3, maxLength=9),
    s(r"^(?P<user>[a-z0-9._%+-]+)@([a-z0-9.-]+)\.[a-z]{2,}$"),
    s(r"^[\u0400-\u04ff\s]{1,5}$"),
    s(r"^#?([a-f0-9]{6}|[a-f0-9]{3})$"),
    s(r"[{}]x{2,}|\[\]"),
    s(r'^[\\"\t]+$', minLength=2, maxLength=4),
    s(r"^(([a-z]+)-)*[a-z]{2}$", maxLength=10),
    s(".*", minLength=4, maxLength=6),
    {"type": ["string", "null"], "pattern": "^v[0-9]+$"},
    {"pattern": "^[0-9]{4}$"},  # no type: only strings are generated
]


@pytest.mark.parametrize("i", range(len(WALK_SCHEMAS)))
def test_pattern_walks_validate(i):
    assert assert_walks_valid(WALK_SCHEMAS[i])


# --- the two dialects: generate only what both ECMA-262 and Python's re accept --------------------------
_ECMA = {
    "d": lambda c: "0" <= c <= "9",
    "w": lambda c: c.isascii() and (c.isalnum() or c == "_"),
    "s": lambda c: (
        c in "\t\n\v\f\r \xa0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff" or "\u2000" <= c <= "\u200a"
    ),
}


@pytest.mark.parametrize("esc", ["d", "D", "w", "W", "s", "S"])
def test_class_escapes_sound_in_both_dialects(esc):
    must, may = (er._CLASS_ESCAPES[esc][i] for i in (0, 1))
    py = re.compile("\\" + esc)
    ecma = _ECMA[esc.lower()] if esc.islower() else (lambda c: not _ECMA[esc.lower()](c))
    for cp in list(range(0x10000)) + [0x1D7CE, 0x1F600, 0x10FFFF]:
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        matches_py, matches_ecma = py.fullmatch(c) is not None, ecma(c)
        in_must = any(a <= cp <= b for a, b in must)
        in_may = any(a <= cp <= b for a, b in may)
        assert not in_must or (matches_py and matches_ecma), (esc, hex(cp))
        assert in_may or not (matches_py or matches_ecma), (esc, hex(cp))


@pytest.mark.parametrize(
    "pattern,good,bad",
    [  # JsonSchemaStore's bukkit-plugin and mongodb-atlas-search-index-definition
        (r"^(?!org\.bukkit\.)([a-zA-Z_$][a-zA-Z\d_$]*\.)*[a-zA-Z_$][a-zA-Z\d_$]*$",
         ["org.foo.Main", "a.b", "org.bukki.X"], ["org.bukkit.Main", "org.bukkit.a.B", "1x"]),
        (r"^(?!^lucene\.|builtin\.|mongodb\.).*", ["lucene", "x.lucene.", "", "builtin"],
         ["lucene.x", "builtin.", "mongodb.a"]),
        (r"^(?![(|])a[|]", ["a|", "a|b"], ["(a|", "b|"]),
    ],
)
def test_a_leading_negative_lookahead_excludes_what_it_names(pattern, good, bad):
    schema = s(pattern, maxLength=24)
    rx = schema_to_regex(schema)
    for v in good:
        assert accepts(rx, json.dumps(v)), v
    for v in bad:
        assert not accepts(rx, json.dumps(v)), v
    assert all(re.search(pattern, v) for v in assert_walks_valid(schema))


def test_a_negative_lookahead_guarding_one_alternative_is_still_refused():
    for pattern in ("^(?!a)b|c", "x(?!a)b", "^(?=a)b"):
        with pytest.raises(UnsupportedSchema, match="lookaround"):
            schema_to_regex(s(pattern))


@pytest.mark.parametrize(
    "pattern,why",
    [
        ("^a(?=b)", "lookaround"),
        ("(?<!a)b", "lookaround"),
        (r"(a)\1", "backreference"),
        (r"\bword", "word boundary"),
        ("(?i)abc", "inline flags"),
        ("a{,3}", "'{,n}'"),
        ("[]a]", "starting with ']'"),
        (r"\Aabc", "escape \\A"),
        ("(^a|b)c", "an anchor inside"),
        ("a$|b^", "an anchor inside"),
        ("a(", "Python's re rejects it"),
        (r"\p{L}", "Python's re rejects it"),
        ("(?<name>a)", "Python's re rejects it"),  # an ECMA named group
    ],
)
def test_unsupported_pattern_is_named(pattern, why):
    schema = {"type": "object", "properties": {"p": s(pattern)}, "required": ["p"]}
    with pytest.raises(UnsupportedSchema, match=re.escape(f"unsupported: pattern {pattern!r}")) as e:
        schema_to_regex(schema)
    assert why in str(e.value) and "(at #/properties/p/pattern)" in str(e.value)


def test_pattern_with_no_generatable_string():
    # the only allowed characters are controls without a short JSON escape: refused (or left out if optional)
    with pytest.raises(UnsupportedSchema, match="no string we generate matches"):
        schema_to_regex(s("^[\x01-\x07]$"))
    rx = schema_to_regex({"type": "object", "properties": {"a": s("^[\x01-\x07]$"), "b": {"type": "null"}}})
    assert accepts(rx, '{"b":null}') and not accepts(rx, '{"a":"x"}')
    with pytest.raises(UnsupportedSchema, match=r"minLength/maxLength 4..5 \(no string we generate fits\)"):
        schema_to_regex(s("^[a-z]{2}$", minLength=4, maxLength=5))
    with pytest.raises(UnsupportedSchema, match=r"pattern '\^3' and format 'date' \(no string we generate"):
        schema_to_regex({"type": "string", "pattern": "^3", "format": "date"})  # our dates are 19xx/20xx


# --- formats -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_formats_validate(fmt):
    # the format checkers jsonschema finds installed check these; each regex is a subset of its format
    values = assert_walks_valid({"type": "string", "format": fmt})
    assert len(set(values)) > 1 or fmt == "regex"


@pytest.mark.parametrize(
    "fmt,lo,hi", [("uri", 0, 24), ("hostname", 3, 8), ("email", 8, 12), ("date", 0, 10), ("ipv4", 9, 11)]
)
def test_formats_with_length_bounds(fmt, lo, hi):
    schema = {"type": "string", "format": fmt, "minLength": lo, "maxLength": hi}
    values = assert_walks_valid(schema)
    assert all(lo <= len(x) <= hi for x in values)


def test_format_length_impossible_is_refused():
    with pytest.raises(UnsupportedSchema, match=r"format 'date' with minLength/maxLength 0..5"):
        schema_to_regex({"type": "string", "format": "date", "maxLength": 5})


def test_duration_and_color_known_values():
    rx = schema_to_regex({"type": "string", "format": "duration"})
    for good in ('"P1Y2M3DT4H5M6S"', '"PT0S"', '"P3W"', '"P1M2D"'):
        assert accepts(rx, good), good
    for bad in ('"P"', '"PT"', '"P1DT"', '"P1Y1W"', '"1D"'):
        assert not accepts(rx, bad), bad
    rx = schema_to_regex({"type": "string", "format": "color"})
    assert accepts(rx, '"#a0b1c2"') and accepts(rx, '"red"') and not accepts(rx, '"#abcd"')
    # draft 3, the only draft whose checker checks color (webcolors), is refused as a whole
    # (constraints/drafts.py); the strings we generate are still ones it accepts
    with pytest.raises(UnsupportedSchema, match="draft 3"):
        schema_to_regex({"$schema": "http://json-schema.org/draft-03/schema#", "type": "string",
                         "format": "color"})
    checker = jsonschema.Draft3Validator.FORMAT_CHECKER
    for word in byte_walks(rx, 40, seed=1):
        assert checker.conforms(json.loads(word), "color"), word


def test_format_known_invalid_rejected():
    rx = schema_to_regex({"type": "string", "format": "ipv6"})
    assert accepts(rx, '"fe80:0:0:0:0:0:0:1"')
    assert not accepts(rx, '"fe80::1::2"') and not accepts(rx, '"1.2.3.4"')
    rx = schema_to_regex({"type": "string", "format": "hostname", "maxLength": 5})
    assert accepts(rx, '"ab.c"') and not accepts(rx, '"-ab"') and not accepts(rx, '"abc.de"')


# --- patternProperties ---------------------------------------------------------------------------------
INT = {"type": "integer"}
PP_EXACT = {
    "closed_map": (
        {"type": "object", "patternProperties": {"^x-[a-z]+$": INT}, "additionalProperties": False},
        ['{"x-a":1,"x-bc":2}', "{}"],
        ['{"y":1}', '{"x-a":"s"}', '{"x-":1}'],
    ),
    "declared_key_takes_pattern_schema": (
        {
            "type": "object",
            "properties": {"ab": INT},
            "patternProperties": {"^a": {"maximum": 5}},
            "additionalProperties": False,
            "required": ["ab"],
        },
        ['{"ab":5}', '{"ab":5,"a":1}'],
        ['{"ab":7}', '{"ab":1,"zz":1}', '{"ab":1,"a":9}'],
    ),
    "two_patterns_overlap": (  # "ab" matches both: a generated key's value satisfies both schemas
        {
            "type": "object",
            "patternProperties": {"^a": INT, "b$": {"type": "number", "minimum": 0}},
            "additionalProperties": False,
        },
        ['{"ab":3}', '{"a":0,"b":1}'],
        ['{"ab":-1}', '{"a":-1}', '{"c":1}'],
    ),
    "required_key_matching_pattern": (
        {
            "type": "object",
            "patternProperties": {"^n_": INT},
            "additionalProperties": {"type": "string"},
            "required": ["n_1"],
        },
        ['{"n_1":4}', '{"n_1":4,"n_2":5}'],
        ['{"n_1":"s"}', "{}"],
    ),
    "untyped_is_object_only": ({"patternProperties": {"^k": INT}}, ['{"k":1}'], ['"s"', "1", '{"k":"s"}']),
    "min_one_pattern_key": (  # JsonSchemaStore's pattern.json: a map of pattern keys, at least one
        {"type": "object", "minProperties": 1,
         "patternProperties": {"^.+$": {"type": "string", "maxLength": 3}}},
        ['{"a":"x"}', '{"a":"x","b":"y"}'],
        ["{}", '{"a":1}'],
    ),
}


@pytest.mark.parametrize("name", sorted(PP_EXACT))
def test_pattern_properties_exact(name):
    schema = PP_EXACT[name][0]
    accepts_exactly(name, *PP_EXACT[name])
    values = assert_walks_valid(schema)
    if name != "untyped_is_object_only":
        assert any(len(x) > len(schema.get("required", [])) for x in values)  # pattern keys are generated


def test_pattern_properties_that_supply_no_keys():
    # a pattern that could produce a dependency's trigger, or that sits beside propertyNames / maxProperties,
    # supplies no keys; declared keys are still checked against it
    dep = {
        "type": "object",
        "properties": {"a": INT},
        "patternProperties": {"^[a-z]$": INT},
        "dependentRequired": {"q": ["a"]},
    }
    rx = schema_to_regex(dep)
    assert not accepts(rx, '{"q":1}') and accepts(rx, '{"a":1}') and not accepts(rx, '{"a":1,"b":2}')
    assert_walks_valid(dep)
    schema_dep = {**dep, "dependentRequired": {}, "dependentSchemas": {"q": {"required": ["a"]}}}
    assert not accepts(schema_to_regex(schema_dep), '{"q":1}')
    capped = {"type": "object", "patternProperties": {"^k": INT}, "maxProperties": 1}
    assert schema_to_regex(capped) == r"\{\}" or not accepts(schema_to_regex(capped), '{"k":1,"k2":2}')


def test_pattern_properties_in_all_of():
    # B is closed: the x-keys A's pattern allows are additional for B, so the merge generates none
    schema = {
        "allOf": [
            {"type": "object", "patternProperties": {"^x": INT}, "required": ["x1"]},
            {"properties": {"x1": {"minimum": 3}}, "additionalProperties": False},
        ]
    }
    rx = schema_to_regex(schema)
    assert accepts(rx, '{"x1":3}') and not accepts(rx, '{"x1":2}') and not accepts(rx, '{"x1":3,"x2":4}')
    assert not accepts(rx, '{"x1":"s"}')
    assert_walks_valid(schema)


# --- the automaton product behind pattern + format, allOf patterns and `not` -----------------------------
_PATTERNS = ["a", "^a", "b$", "^(ab)+$", "a.c", "^[ab]*c$", "(a|bc)+", "^a{2,3}$", "c", "^$"]
_WORDS = ["".join(w) for n in range(6) for w in itertools.product("abc", repeat=n)]


def _language(node) -> set[str]:
    rx = re.compile(emit(node))
    return {w for w in _WORDS if rx.fullmatch(w)}


@pytest.mark.parametrize("p", _PATTERNS)
def test_intersection_and_difference_match_pythons_re(p):
    """Over every word of a, b, c up to length 5: the product's language is exactly re.search's."""
    for q in _PATTERNS:
        both = combine([pattern_node(p, "#"), pattern_node(q, "#")], [], lambda r: True)
        minus = combine([pattern_node(p, "#")], [(search_superset(q, "#"),)], lambda r: True)
        want_both = {w for w in _WORDS if re.search(p, w) and re.search(q, w)}
        want_minus = {w for w in _WORDS if re.search(p, w) and not re.search(q, w)}
        assert (set() if both is None else _language(both)) == want_both, (p, q)
        assert (set() if minus is None else _language(minus)) == want_minus, (p, q)


def test_conjoined_pattern_splits_back_and_many_words_fall_back_to_their_own_match():
    joined = conjunction_pattern("^(a|b)", "x$", "#")
    assert split_conjunction(joined) == ["^(a|b)", "x$"]
    words = ["NEW", "ON_APPROVAL", "ON_SIGNING", "ON_MODIFICATION", "EXECUTED", "REJECTED", "DRAFT", "SENT"]
    schema = {"oneOf": [{"type": "string", "pattern": w} for w in words]}  # unanchored: overlaps everywhere
    rx = schema_to_regex(schema)
    assert all(accepts(rx, f'"{w}"') for w in words) and not accepts(rx, '"NEW SENT"')
    assert_walks_valid(schema)


URL = (r"^https?:\/\/(www\.)?[-a-zA-Z0-9@:%._\+~#=]{1,256}\.[a-zA-Z0-9()]{1,6}\b"
       r"([-a-zA-Z0-9()@:%_\+.~#?&//=]*)$")


def test_a_oneof_beside_a_word_boundary_pattern_excludes_its_widened_language():
    """JsonSchemaStore's dein `repo`: oneOf a URL pattern with `\\b` (which we cannot generate), a path and a
    user/repo name. The URL branch adds nothing; the others exclude a superset of the URL's strings (the
    `\\b` dropped, `{1,256}` widened to `{1,}`), so every output matches exactly one branch."""
    schema = {"oneOf": [s(URL), s(r"^[~|/][a-zA-Z-_0-9/\.~]+$", maxLength=12),
                        s(r"^[a-zA-Z-_0-9]+/[a-zA-Z-_0-9\.]+$", maxLength=12)]}
    values = assert_walks_valid(schema)  # the validator checks oneOf: exactly one branch matches
    assert any(v.startswith(("~", "/", "|")) for v in values) and any(v[0].isalnum() for v in values)
    assert not any(re.search(URL, v) for v in values)


@pytest.mark.parametrize("pattern", [r"\bid\b", r"^x{3,200}$", r"^[ab]{2,40}\Bc"])
def test_not_pattern_excludes_a_superset_when_the_pattern_has_a_boundary_or_long_count(pattern):
    schema = {"type": "string", "maxLength": 6, "not": {"pattern": pattern}}
    values = assert_walks_valid(schema)
    assert values and not any(re.search(pattern, v) for v in values)


def test_many_unanchored_key_patterns_share_one_pair_of_pads():
    """Github_hard's o48423: patternProperties "Red|Blue|...|Let's Go Eevee" (30 unanchored words). Written
    `.*w1.*|...|.*w30.*` its automaton never finished building (the subset construction tracked which
    words had matched); `.*(w1|...|w30).*` is the same language and builds at once."""
    words = [f"word{i}" for i in range(30)]
    schema = {"type": "object", "additionalProperties": False,
              "patternProperties": {"|".join(words): {"type": "integer", "maximum": 9}}}
    t0 = time.perf_counter()
    rx = schema_to_regex(schema)
    assert accepts(rx, '{"xword7y":3,"word29":1}') and not accepts(rx, '{"wordx":1}')
    values = assert_walks_valid(schema, 40)
    assert time.perf_counter() - t0 < 60  # generous for a shared CPU; before: not done after 120 s
    assert any(values) and all(any(w in k for w in words) for v in values for k in v)
