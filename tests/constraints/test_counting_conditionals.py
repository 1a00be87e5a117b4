"""Issue 24, counting and conditional keywords (counting.py, conditionals.py, property_names.py).

Each shape is enforced exactly on a subset: a known-invalid instance is rejected by the byte automaton, a
valid one accepted, and random walks over the automaton (>= 100 per shape) all validate with jsonschema.
What stays unsupported is refused naming the keyword and its JSON pointer.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import jsonschema
import pytest

from constraints.counting import divides_one
from constraints.schema_regex import schema_to_regex, strict_validator
from constraints.vocab_bytes import token_bytes
from constraints.walks import byte_accepts as accepts
from jobs.cmd_check_schema import check_one
from tests.constraints.conftest import assert_exact_shape, assert_refused, assert_walks_valid
from tests.constraints.test_schema_regex import samples

REAL = Path(__file__).resolve().parent / "data" / "counting_conditionals"
D4 = "http://json-schema.org/draft-04/schema#"
INT = {"type": "integer"}
ABC = {"a": INT, "b": {"type": "string", "maxLength": 2}, "c": {"type": "boolean"}}

# name -> (schema, an instance it accepts that we must allow, an instance it rejects)
EXACT = {
    "minProperties_forces_optional": (
        {"type": "object", "properties": ABC, "minProperties": 2},
        '{"a":1,"b":"x"}',
        '{"a":1}',
    ),
    "maxProperties_caps_optional": (
        {"type": "object", "properties": ABC, "required": ["c"], "maxProperties": 2},
        '{"a":1,"c":true}',
        '{"a":1,"b":"x","c":true}',
    ),
    "free_map_min_max_properties": (  # distinct key lengths: a repeated key cannot merge two pairs
        {"type": "object", "additionalProperties": INT, "minProperties": 2, "maxProperties": 3},
        '{"k":1,"kk":2}',
        '{"k":1,"k":2}',
    ),
    "untyped_minProperties_is_an_object": ({"minProperties": 1}, '{"x":null}', "{}"),
    "uniqueItems_enum_domain": (
        {"type": "array", "items": {"enum": ["a", "b", "c", 1, 1.0]}, "uniqueItems": True, "minItems": 2},
        '["b","c",1]',  # with minItems 2 the first two members are consecutive in the enum's order
        '["a","a"]',
    ),
    "uniqueItems_boolean_max": (
        {"type": "array", "items": {"type": "boolean"}, "uniqueItems": True, "maxItems": 5},
        "[true,false]",
        "[true,true]",
    ),
    "uniqueItems_strings_one_item": (
        {"type": "array", "items": {"type": "string"}, "uniqueItems": True, "minItems": 1},
        '["x"]',
        '["x","x"]',
    ),
    "draft4_items_list_additionalItems_false": (
        {"$schema": D4, "type": "array", "items": [{"type": "string"}, INT], "additionalItems": False},
        '["s",1]',
        '["s",1,2]',
    ),
    "draft4_items_list_additionalItems_schema": (
        {
            "$schema": D4,
            "type": "array",
            "items": [{"type": "string"}],
            "additionalItems": {"type": "boolean"},
            "minItems": 2,
        },
        '["s",true,false]',
        '["s",1]',
    ),
    "prefixItems_items_false": (
        {"type": "array", "prefixItems": [INT, {"type": "string"}], "items": False, "minItems": 1},
        '[1,"a"]',
        '[1,"a",2]',
    ),
    "additionalItems_ignored_without_list": (  # draft 4: additionalItems has no effect here
        {"$schema": D4, "type": "array", "items": INT, "additionalItems": False, "maxItems": 3},
        "[1,2,3]",
        '[1,"x"]',
    ),
    "multipleOf_cent_number": ({"type": "number", "multipleOf": 0.01, "minimum": 0}, "1999", "0.005"),
    "multipleOf_one_untyped": ({"multipleOf": 1, "maximum": 9}, "-12", "1.5"),
    "multipleOf_integer_bounded": (
        {"type": "integer", "multipleOf": 7, "minimum": -15, "maximum": 40},
        "-14",
        "20",
    ),
    "if_then_merged": (
        {
            "type": "object",
            "properties": {"kind": {"enum": ["a", "b"]}, "x": INT},
            "required": ["kind"],
            "if": {"properties": {"kind": {"const": "a"}}},
            "then": {"required": ["x"]},
            "else": {"properties": {"x": False}},
        },
        '{"kind":"a","x":1}',
        '{"kind":"a"}',
    ),
    "if_then_unsatisfiable_uses_else_by_type": (
        {"if": {"type": "string"}, "then": False, "else": {"type": "integer", "maximum": 5}},
        "5",
        '"s"',
    ),
    "if_required_fails_by_missing_key": (
        {
            "type": "object",
            "properties": {"a": INT, "b": INT},
            "if": {"required": ["a"]},
            "then": {"properties": {"a": {"type": "string"}}},  # a must be integer and string: no value
            "else": {"required": ["b"]},
        },
        '{"b":1}',
        '{"a":1,"b":1}',
    ),
    "then_else_without_if_ignored": ({"type": "boolean", "then": False, "else": False}, "true", "1"),
    "dependencies_schema_required_trigger": (
        {
            "$schema": "http://json-schema.org/draft-07/schema#",  # 2020-12 ignores `dependencies`
            "type": "object",
            "properties": {"a": INT, "b": {"type": "string"}},
            "required": ["a"],
            "dependencies": {"a": {"required": ["b"]}, "b": {"properties": {"a": {"minimum": 3}}}},
        },
        '{"a":3,"b":"x"}',
        '{"a":1,"b":"x"}',
    ),
    "dependentSchemas_optional_trigger_dropped": (
        {
            "type": "object",
            "properties": {"a": INT, "b": INT},
            "required": ["b"],
            "dependentSchemas": {"a": {"properties": {"b": {"maximum": 0}}}},
        },
        '{"b":5}',
        '{"a":1,"b":5}',
    ),
    "propertyNames_enum_free_map": (
        {"type": "object", "additionalProperties": INT, "propertyNames": {"enum": ["x", "yy"]}},
        '{"x":1,"yy":2}',
        '{"z":1}',
    ),
    "propertyNames_drops_declared_key": (
        {"type": "object", "properties": {"ab": INT, "abc": INT}, "propertyNames": {"maxLength": 2}},
        '{"ab":1}',
        '{"abc":1}',
    ),
}

# name -> (schema, the refusal's message must contain this)
REFUSED = {
    "uniqueItems_min2_open_domain": (
        {"type": "array", "items": {"type": "string"}, "uniqueItems": True, "minItems": 2},
        "unsupported: uniqueItems with minItems 2",
    ),
    "minProperties_too_few_keys": (
        {"type": "object", "properties": {"a": INT}, "minProperties": 2, "additionalProperties": False},
        "unsupported: minProperties 2 (only 1 properties can be generated) (at #)",
    ),
    "maxProperties_below_required": (
        {"type": "object", "properties": ABC, "required": ["a", "b"], "maxProperties": 1},
        "maxProperties 1 below the 2 required properties",
    ),
    "multipleOf_unbounded_integer": (
        {"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 3}}, "required": ["n"]},
        "unsupported: multipleOf 3 (only 1/K steps",
    ),
    "multipleOf_odd_fraction": ({"type": "number", "multipleOf": 0.3}, "(at #)"),
    "if_no_decidable_else": (  # failing a format is not something we can write (negation.py)
        {"if": {"format": "email"}, "then": False, "else": {"type": "string"}},
        "unsupported: if/then/else (neither if+then nor else",
    ),
    "propertyNames_rejects_required": (
        {
            "type": "object",
            "properties": {"long": INT},
            "required": ["long"],
            "propertyNames": {"maxLength": 3},
        },
        "required property 'long' rejected by propertyNames (no object validates) (at #/propertyNames)",
    ),
    "draft2020_items_list": (  # jsonschema fails on every non-empty instance of this draft-2019 form
        {"type": "array", "items": [INT], "minItems": 1},
        "minItems 1 beyond the items that can validate (at #)",
    ),
    "minProperties_many_with_propertyNames": (
        {"type": "object", "propertyNames": {"maxLength": 3}, "minProperties": 2},
        "unsupported: minProperties 2 with propertyNames (at #)",
    ),
}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_shape_accepts_valid_rejects_invalid(name):
    assert_exact_shape(name, *EXACT[name])


@pytest.mark.parametrize("name", sorted(EXACT))
def test_shape_every_sampled_output_validates(name):
    assert len(assert_walks_valid(EXACT[name][0], 120, seed=3)) >= 100


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_unenforceable_shape_is_refused_by_name(name):
    assert_refused(*REFUSED[name])


def test_unique_enum_arrays_cover_every_subset_in_order():
    """The finite-domain form allows every increasing selection, and nothing with a repeat."""
    schema = {"type": "array", "items": {"enum": ["x", "y", "z"]}, "uniqueItems": True}
    rx = schema_to_regex(schema)
    for sub in ("[]", '["x","y","z"]', '["x","z"]', '["y"]', '["y","z"]'):
        assert accepts(rx, sub), sub
    for dup in ('["x","x"]', '["x","y","x"]', '["z","z"]'):
        assert not accepts(rx, dup), dup
    numbers = schema_to_regex({"type": "array", "items": {"enum": [1, 1.0, True]}, "uniqueItems": True})
    assert accepts(numbers, "[1,true]") and not accepts(numbers, "[1,1.0]")  # 1 == 1.0 to jsonschema


@pytest.mark.parametrize("m", [0.01, 0.1, 0.05, 0.5, 1.0])
def test_every_integer_is_a_multiple_under_jsonschemas_float_test(m):
    assert divides_one(m)
    v = jsonschema.Draft202012Validator({"multipleOf": m})
    rng = random.Random(7)
    ints = list(range(-2000, 2000)) + [rng.randrange(-(10**16), 10**16) for _ in range(20000)]
    ints += [2**53 - 1, 2**53, 2**53 + 1, 10**16 - 1]
    assert all(v.is_valid(n) for n in ints)


def test_fractional_steps_that_do_not_divide_one_are_not_treated_as_units():
    assert not divides_one(0.3) and not divides_one(2) and not divides_one(1e-5)


@pytest.mark.parametrize("path", sorted(REAL.glob("*.json")), ids=lambda p: p.stem)
def test_real_schemas_refused_before_now_compile_and_validate(path):
    schema = json.loads(path.read_text())
    v = strict_validator(schema)
    for text in samples(schema_to_regex(schema), 25, seed=0):
        assert v.is_valid(json.loads(text)), (path.name, text)


@pytest.fixture(scope="module")
def vocab(gemma_tok):
    return token_bytes(gemma_tok)


@pytest.mark.parametrize(
    "name", ["maxProperties_caps_optional", "uniqueItems_enum_domain", "if_required_fails_by_missing_key"]
)
def test_check_schema_rollouts_validate(name, vocab):
    """What `dgbatch check-schema` runs: random-logit rollouts through the commit DP validate."""
    res = check_one(EXACT[name][0], vocab, [1], max_new_tokens=256, canvas_length=32, seed=0)
    assert res["supported"] and res["valid"], (name, res)


def test_a_chain_of_conditionals_on_one_key_decides_at_each_step():
    """JsonSchemaStore's minecraft-item-modifier shape: allOf of `if {k: const c_i}` / `then`, one per value
    of k. Each `if` is tried with k present first and a side whose const/enum clash is found before the
    conditionals below it are chosen, so the search is linear, not 2^20 (it used to hit MAX_TRIES)."""
    kinds = [f"kind{i}" for i in range(20)]
    schema = {
        "type": "object",
        "properties": {"k": {"enum": kinds}},
        "required": ["k"],
        "allOf": [{"if": {"properties": {"k": {"const": c}}},
                   "then": {"properties": {f"p{i}": {"type": "integer", "maximum": i}},
                            "required": [f"p{i}"]}}
                  for i, c in enumerate(kinds)],
    }
    rx = schema_to_regex(schema)
    assert accepts(rx, '{"k":"kind0","p0":0}') and not accepts(rx, '{"k":"kind0","p0":1}')
    assert not accepts(rx, '{"k":"kind0"}')  # kind0's `then` holds
    values = assert_walks_valid(schema, 60)
    assert {v["k"] for v in values} == {"kind0"}  # the first side that holds is the one generated


def test_a_key_pinned_by_the_rest_fails_an_if_only_by_json_equality():
    # the rest pins k to 1; `if` wants 1.0, which is the same JSON number: `then` must hold, not `else`
    schema = {"type": "object", "properties": {"k": {"const": 1}}, "required": ["k"],
              "if": {"properties": {"k": {"const": 1.0}}}, "then": {"required": ["t"]},
              "else": {"required": ["e"]}}
    rx = schema_to_regex(schema)
    assert not accepts(rx, '{"k":1,"e":0}')
    assert all("t" in v for v in assert_walks_valid(schema, 30))
    pinned = {**schema, "if": {"properties": {"k": {"enum": [2, True]}}}}  # true != 1: `if` fails
    assert all("e" in v and "t" not in v for v in assert_walks_valid(pinned, 30))
