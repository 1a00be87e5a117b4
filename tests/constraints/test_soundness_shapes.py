"""Issue 24: schema shapes whose constraint allowed output the schema rejects, and an allOf/$ref crash.

Each shape is either enforced exactly (a known-invalid instance is rejected by the byte automaton, a valid
one accepted, and every output the constraint allows validates with jsonschema: random walks over the
automaton, then check-schema's random-logit rollouts through the commit DP), or refused with
UnsupportedSchema naming the keyword and its JSON pointer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from constraints.schema_regex import UnsupportedSchema, schema_to_regex, strict_validator
from constraints.walks import byte_accepts as accepts
from jobs.cmd_check_schema import check_one
from tests.constraints.conftest import assert_exact_shape
from tests.constraints.test_schema_regex import samples

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = Path(__file__).resolve().parent / "data" / "glaive_sample"

A_SHORT = {"a": {"type": "string", "maxLength": 3}}
CLOSED_A = {"type": "object", "properties": A_SHORT, "additionalProperties": False}
DIGIT = {"type": "integer", "minimum": 0, "maximum": 9}

# name -> (schema, an instance the schema accepts, an instance it rejects that the old constraint allowed)
EXACT = {
    "allOf_closed_part": (
        {"allOf": [{**CLOSED_A, "required": ["a"]}, {"properties": {"b": {"type": "integer"}}}]},
        '{"a":"x"}',
        '{"a":"x","b":1}',  # b is additional for the closed first part
    ),
    "allOf_additional_schema": (
        {
            "allOf": [
                {"properties": {"a": {"type": "string"}}, "additionalProperties": DIGIT},
                {"properties": {"b": {"type": "number"}}, "required": ["b"]},
            ]
        },
        '{"b":7}',
        '{"b":1.5}',  # b must also satisfy the first part's additionalProperties
    ),
    "allOf_optional_key_no_value": (  # c must be a string and an integer: a valid object never has it
        {
            "allOf": [
                {"properties": {"b": {"type": "integer"}}, "additionalProperties": {"type": "integer"}},
                {"properties": {"c": {"type": "string"}}},
            ]
        },
        '{"b":1}',
        '{"c":"s"}',
    ),
    "anyOf_branch_no_value_is_skipped": (  # the first branch needs a both integer and string
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}},
            "additionalProperties": {"type": "string", "maxLength": 3},
            "anyOf": [{"properties": {"a": {"type": "string"}}, "required": ["a"]}, {"required": ["b"]}],
        },
        '{"b":"s"}',
        '{"a":1}',
    ),
    "ref_with_siblings": (
        {"$defs": {"A": CLOSED_A}, "$ref": "#/$defs/A", "properties": {"b": {"type": "integer"}}},
        '{"a":"x"}',
        '{"b":1}',
    ),
    "anyOf_branch_closed": (
        {
            "type": "object",
            "properties": {"a": {"type": "string", "maxLength": 2}, "b": {"type": "integer"}},
            "anyOf": [
                {"required": ["a"], "properties": {"a": {}}, "additionalProperties": False},
                {"required": ["c"]},
            ],
        },
        '{"b":2,"c":true}',
        '{"a":"x","b":1}',  # b breaks the closed first branch, and c is missing for the second
    ),
    "oneOf_closed_parent": (
        {
            "type": "object",
            "properties": {"a": {"type": "string"}},
            "additionalProperties": False,
            "oneOf": [{"required": ["a"]}, {"properties": {"x": {"type": "integer"}}, "required": ["x"]}],
        },
        '{"a":"q"}',
        '{"x":5}',
    ),
    "anyOf_closed_parent_optional": (
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}},
            "additionalProperties": False,
            "anyOf": [{"properties": {"b": {"type": "string"}}, "required": ["a"]}],
        },
        '{"a":1}',
        '{"a":1,"b":"s"}',
    ),
    "required_undeclared": (
        {
            "type": "object",
            "properties": {"a": {"type": "string"}},
            "required": ["a", "z"],
            "additionalProperties": DIGIT,
        },
        '{"a":"x","z":3}',
        '{"a":"x","z":"s"}',
    ),
    "dependency_undeclared": (
        {
            "type": "object",
            "properties": {"a": {"type": "string"}},
            "required": ["a"],
            "dependencies": {"a": ["d"]},
            "additionalProperties": {"type": "boolean"},
        },
        '{"a":"x","d":true}',
        '{"a":"x","d":1}',
    ),
    "dependencies_and_dependentRequired": (  # draft-07 checks `dependencies` only: neither may be dropped
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {k: {"type": "integer"} for k in "abc"},
            "required": ["a"],
            "dependencies": {"a": ["b"]},
            "dependentRequired": {"a": ["c"]},
        },
        '{"a":1,"b":2,"c":3}',
        '{"a":1,"c":3}',
    ),
    "untyped_minProperties": ({"minProperties": 1}, '{"x":null}', "{}"),  # objects only, >= 1 key
}

# name -> (schema, the refusal's message must contain this, an output the old constraint allowed)
REFUSED = {
    "allOf_required_in_closed_part": (
        {"allOf": [CLOSED_A, {"properties": {"b": {}}, "required": ["b"]}]},
        "required property 'b' forbidden by additionalProperties (no object validates) "
        "(at #/allOf/0/additionalProperties)",
        '{"b":1}',
    ),
    "required_closed": (
        {**CLOSED_A, "required": ["z"]},
        "required property 'z' forbidden by additionalProperties (no object validates) "
        "(at #/additionalProperties)",
        '{"z":1}',
    ),
    "dependency_closed": (
        {**CLOSED_A, "required": ["a"], "dependentRequired": {"a": ["d"]}},
        "required (by dependencies) property 'd' forbidden by additionalProperties",
        '{"a":"x","d":1}',
    ),
    "dependencies_on_free_map": (
        {"type": "object", "additionalProperties": {"type": "integer"}, "dependentRequired": {"x": ["y"]}},
        "dependencies on a map without properties (at #)",
        '{"x":1}',
    ),
    "untyped_dependencies": (  # no `type`: generating any value would include {"a": ...}
        {"dependentRequired": {"a": ["b"]}},
        "dependencies on a map without properties (at #)",
        '{"a":1}',
    ),
}

RECURSIVE = {
    "allOf_self_ref": {"$defs": {"n": {"allOf": [{"$ref": "#/$defs/n"}]}}, "$ref": "#/$defs/n"},
}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_shape_rejects_the_invalid_instance(name):
    assert_exact_shape(name, *EXACT[name])


@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_shape_every_sampled_output_validates(name, vocab):
    schema = EXACT[name][0]
    v = strict_validator(schema)
    for text in samples(schema_to_regex(schema), 150, seed=1):
        errors = list(v.iter_errors(json.loads(text)))
        assert not errors, (name, text, errors[0].message)
    for seed in range(3):  # what `dgbatch check-schema` runs to print valid=yes/NO
        res = check_one(schema, vocab, [1], max_new_tokens=256, canvas_length=32, seed=seed)
        assert res["supported"] and res["valid"], (name, seed, res)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_unsatisfiable_or_unenforceable_shape_is_refused(name):
    schema, message, old_output = REFUSED[name]
    assert not strict_validator(schema).is_valid(json.loads(old_output))
    with pytest.raises(UnsupportedSchema, match="^unsupported: ") as err:
        schema_to_regex(schema)
    assert message in str(err.value)


@pytest.mark.parametrize("name", sorted(RECURSIVE))
def test_recursion_through_allof_ref_is_refused_not_a_crash(name):
    with pytest.raises(UnsupportedSchema, match=r"\$ref recursion deeper than"):
        schema_to_regex(RECURSIVE[name])


def test_allof_ref_and_ref_siblings_still_compile():
    """The common non-recursive forms keep working: allOf:[{$ref}] with annotations, $ref + description."""
    city = {"type": "string", "maxLength": 4}
    addr = {"type": "object", "properties": {"city": city}, "required": ["city"]}
    schema = {
        "$defs": {"Addr": addr},
        "type": "object",
        "properties": {
            "home": {"allOf": [{"$ref": "#/$defs/Addr"}], "description": "where"},
            "work": {"$ref": "#/$defs/Addr", "description": "office"},
        },
        "required": ["home", "work"],
        "additionalProperties": False,
    }
    rx = schema_to_regex(schema)
    assert accepts(rx, '{"home":{"city":"Oslo"},"work":{"city":"Rome"}}')
    v = strict_validator(schema)
    for text in samples(rx, 40, seed=2):
        assert v.is_valid(json.loads(text)), text


def test_shipped_sample_coverage_does_not_fall():
    """Every schema of the shipped sample that compiles yields only valid samples; 18 of 20 compile."""
    files = sorted(SAMPLE.glob("*.json"))
    assert len(files) == 20, f"sample missing at {SAMPLE}"
    supported = 0
    for f in files:
        schema = json.loads(f.read_text())
        try:
            rx = schema_to_regex(schema)
        except UnsupportedSchema as e:
            assert str(e).startswith("unsupported: "), (f.name, e)
            continue
        supported += 1
        v = strict_validator(schema)
        for text in samples(rx, 15, seed=0):
            assert v.is_valid(json.loads(text)), (f.name, text)
    assert supported >= 18  # measured before issue 24's fixes (bench/schema_coverage.py: 18/20)
