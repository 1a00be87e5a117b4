"""Issue 24: `not` (negation.py, fail_ways.py, accepted_strings.py), overlapping oneOf narrowed with `not`
(unions.py), and allOf conflicts merged exactly (all_of.py, bounds.py).

Every shape: the byte automaton accepts a valid instance and rejects an invalid one (conftest
`assert_exact_shape`), and >= 100 random walks over it all validate with jsonschema. What stays out of reach
is refused naming the keyword and its pointer. Real schemas refused before
(tests/constraints/data/not_oneof_allof, MIT, see its README) now compile and their walks validate.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from constraints.all_of import merge_conjuncts
from constraints.schema_regex import UnsupportedSchema, schema_to_regex, strict_validator
from constraints.walks import byte_accepts as accepts
from tests.constraints.conftest import assert_exact_shape, assert_refused, assert_walks_valid
from tests.constraints.test_schema_regex import samples

REAL = Path(__file__).resolve().parent / "data" / "not_oneof_allof"
D4 = "http://json-schema.org/draft-04/schema#"
STR = {"type": "string"}
INT = {"type": "integer"}

# name -> (schema, an instance it accepts that we must allow, an instance it rejects)
EXACT = {
    # --- not --------------------------------------------------------------------------------------------
    "not_type": (
        {"type": "object", "properties": {"a": {"not": STR}}, "required": ["a"]}, '{"a":1}', '{"a":"x"}'
    ),
    "not_pattern": ({"type": "string", "maxLength": 4, "not": {"pattern": "^a"}}, '"ba"', '"ab"'),
    "not_pattern_trailing_newline": (  # Python's $ also matches before a final newline
        {"type": "string", "not": {"pattern": "^x$"}}, '"y"', '"x\\n"'
    ),
    "not_string_enum": ({"type": "string", "maxLength": 2, "not": {"enum": ["a", "b", 3]}}, '"c"', '"a"'),
    "not_length": ({"type": "string", "not": {"minLength": 2}}, '"x"', '"xy"'),
    "not_anyof_patterns": (
        {"type": "string", "maxLength": 3, "not": {"anyOf": [{"pattern": "a"}, {"pattern": "b"}]}},
        '"cc"',
        '"cb"',
    ),
    "not_integer_enum": ({"type": "integer", "not": {"enum": [0, 2]}, "minimum": 0}, "1", "2"),
    "not_minimum": ({"type": "integer", "not": {"minimum": 5}}, "4", "5"),
    "not_minimum_draft4_exclusive": (
        {"$schema": D4, "type": "integer", "not": {"minimum": 5, "exclusiveMinimum": True}},
        "5",
        "6",
    ),
    "not_const_boolean": ({"type": "boolean", "not": {"const": True}}, "false", "true"),
    "not_required_pair": (
        {
            "type": "object",
            "properties": {"a": INT, "b": INT},
            "additionalProperties": False,
            "not": {"allOf": [{"required": ["a"]}, {"required": ["b"]}]},
        },
        '{"b":2}',  # one way to fail is generated (negation.MAX_WAYS): a missing
        '{"a":1,"b":2}',
    ),
    "not_property_const": (
        {
            "type": "object",
            "properties": {"mode": {"enum": ["x", "y"]}},
            "required": ["mode"],
            "not": {"properties": {"mode": {"const": "x"}}},
        },
        '{"mode":"y"}',
        '{"mode":"x"}',
    ),
    "not_items": ({"type": "array", "maxItems": 2, "not": {"items": STR}}, "[1]", '["a"]'),
    "not_listed_object": (
        {"type": "object", "properties": {"t": STR}, "required": ["t"], "not": {"enum": [{"t": "void"}]}},
        '{"t":"x"}',
        '{"t":"void"}',
    ),
    "else_through_not_if": (  # if minLength 2 then nothing, else a string: strings shorter than 2
        {"if": {"minLength": 2}, "then": False, "else": STR},
        '"a"',
        '"ab"',
    ),
    # --- oneOf whose branches may overlap: each narrowed to fail the others ------------------------------
    "oneOf_object_overlap": (
        {"oneOf": [{"type": "object", "properties": {k: STR}} for k in "ab"]},
        '{"a":"x","b":1}',
        "{}",  # both branches hold
    ),
    "oneOf_string_lengths": (
        {"type": "string", "oneOf": [{"maxLength": 3}, {"minLength": 2}]}, '"a"', '"ab"'
    ),
    "oneOf_patterns": (
        {"oneOf": [{"type": "string", "pattern": "^ab"}, {"type": "string", "pattern": "c$"}]},
        '"abd"',
        '"abc"',
    ),
    "oneOf_discriminator_not_required": (
        {
            "type": "object",
            "oneOf": [
                {"properties": {"kind": {"enum": ["a"]}, "v": INT}},
                {"properties": {"kind": {"enum": ["b"]}, "v": STR}},
            ],
        },
        '{"kind":"a","v":1}',
        '{"kind":"a","v":"s"}',
    ),
    "oneOf_with_anyOf": (
        {"anyOf": [{"type": "integer"}, {"type": "string"}], "oneOf": [{"minimum": 3}, {"maxLength": 1}]},
        '"st"',
        '"s"',  # both branches hold (minimum says nothing about strings)
    ),
    # --- allOf conflicts merged exactly --------------------------------------------------------------------
    "allOf_bounds": (
        {"allOf": [{"type": "integer", "minimum": 2, "maximum": 9}, {"minimum": 4, "exclusiveMaximum": 6}]},
        "5",
        "3",
    ),
    "allOf_bounds_draft4": (
        {"$schema": D4, "allOf": [{**INT, "maximum": 5, "exclusiveMaximum": True}, {"maximum": 8}]},
        "4",
        "5",
    ),
    "allOf_lengths_and_patterns": (
        {"allOf": [{"type": "string", "pattern": "^a", "maxLength": 5}, {"pattern": "b$", "minLength": 3}]},
        '"axb"',
        '"ab"',
    ),
    "allOf_multipleOf_lcm": (
        {"allOf": [{"type": "integer", "multipleOf": 4, "maximum": 40, "minimum": 0}, {"multipleOf": 6}]},
        "24",
        "8",
    ),
    "allOf_two_anyOf": (
        {"allOf": [{"anyOf": [INT, STR]}, {"anyOf": [{"type": "string"}, {"type": "null"}]}]},
        '"x"',
        "1",
    ),
    "allOf_two_if": (
        {
            "type": "object",
            "properties": {"k": {"enum": ["a", "b"]}, "n": INT},
            "required": ["k"],
            "allOf": [
                {"if": {"properties": {"k": {"const": "a"}}}, "then": {"required": ["n"]}},
                {"if": {"properties": {"k": {"const": "b"}}}, "then": {"properties": {"n": False}}},
            ],
        },
        '{"k":"a","n":1}',
        '{"k":"a"}',
    ),
    "allOf_vendor_keyword": (
        {"allOf": [{"type": "integer", "x-doc": "one"}, {"minimum": 1, "x-doc": "two"}]},
        "1",
        "0",
    ),
    "allOf_items": ({"allOf": [{"type": "array", "items": INT}, {"items": {"minimum": 1}}]}, "[1]", "[0]"),
}

# name -> (schema, the refusal's message must contain this)
REFUSED = {
    "not_checked_format": ({"type": "string", "not": {"format": "email"}}, "not with format 'email'"),
    "not_non_integer_number": ({"type": "number", "not": INT}, "unsupported: not (no way to fail it"),
    "oneOf_formats": (
        {"type": "object", "properties": {"p": {"oneOf": [{"type": "string", "format": "email"}, STR]}}},
        "(at #/properties/p)",
    ),
    "allOf_two_formats": ({"allOf": [{"format": "date"}, {"format": "email"}]}, "conflicting 'format'"),
    "allOf_float_steps": ({"allOf": [{"multipleOf": 0.3}, {"multipleOf": 0.1}]}, "conflicting 'multipleOf'"),
}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_shape_accepts_valid_rejects_invalid(name):
    assert_exact_shape(name, *EXACT[name])


@pytest.mark.parametrize("name", sorted(EXACT))
def test_shape_every_sampled_output_validates(name):
    assert len(assert_walks_valid(EXACT[name][0], 120, seed=5, max_len=120)) >= 100


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_out_of_reach_is_refused_by_name(name):
    assert_refused(*REFUSED[name])


def test_unsatisfiable_oneof_stays_refused():
    """Every value the parent allows has all keys, so it matches every branch: no value has exactly one."""
    schema = {
        "type": "object",
        "properties": {"r": INT, "w": INT},
        "required": ["r", "w"],
        "oneOf": [{"required": ["r"]}, {"required": ["w"]}],
    }
    with pytest.raises(UnsupportedSchema, match=r"oneOf \(no branch has a valid instance\) \(at #\)"):
        schema_to_regex(schema)


def test_pattern_conflict_merges_into_one_pattern_python_reads_as_both():
    merged = merge_conjuncts([("#", {"pattern": p}) for p in ("^a", "b$", "x")], "#")
    v = strict_validator({"type": "string", **merged})
    for text, ok in [("axb", True), ("ab", False), ("a\nxb", True), ("xab", False), ("ax\nb\n", True)]:
        both = text.startswith("a") and text.rstrip("\n").endswith("b") and "x" in text
        assert v.is_valid(text) == ok == both, text
    with pytest.raises(UnsupportedSchema, match="conflicting 'pattern'"):
        merge_conjuncts([("#", {"pattern": "(a)\\1"}), ("#", {"pattern": "b"})], "#")


def test_vendor_keyword_keeps_the_first_value_and_enum_meets_const():
    parts = [("#", {"x-a": 1, "enum": [1, True, "s"]}), ("#", {"x-a": 2, "const": 1.0})]
    merged = merge_conjuncts(parts, "#")
    assert merged == {"x-a": 1, "enum": [1]}  # true is not 1 in JSON, 1.0 is


@pytest.mark.parametrize("path", sorted(REAL.glob("*.json")), ids=lambda p: p.stem)
def test_real_schemas_refused_before_now_compile_and_validate(path):
    schema = json.loads(path.read_text())
    v = strict_validator(schema)
    rx = schema_to_regex(schema)
    for text in samples(rx, 30, seed=1, max_len=400):
        assert v.is_valid(json.loads(text)), (path.name, text)


def test_real_oneof_with_an_overlap_keeps_exactly_one_branch():
    """o11666: `{"type": "void"}` is the voidType enum and a modelType too; it validates neither way."""
    schema = json.loads((REAL / "Github_medium_o11666.json").read_text())
    rx = schema_to_regex(schema)
    assert accepts(rx, '{"type":"custom"}') and not accepts(rx, '{"type":"void"}')


def test_not_oneof_of_strings_excludes_the_union_of_its_branches():
    """A string matching exactly one branch matches at least one: excluding anyOf's union (a superset of
    oneOf's strings) is sound (JsonSchemaStore's dein narrows a oneOf by `not` of one holding a oneOf)."""
    schema = {"type": "string", "maxLength": 4, "not": {"oneOf": [{"pattern": "^a"}, {"pattern": "b$"}]}}
    rx = schema_to_regex(schema)
    assert accepts(rx, '"ba"') and not accepts(rx, '"ax"') and not accepts(rx, '"xb"')
    values = assert_walks_valid(schema, 60)
    assert values and not any(v.startswith("a") or v.endswith("b") for v in values)
