"""Issue 24: $ref depth counts recursion only (refs.py); overlapping anyOf, exclusive or narrowed oneOf
(unions.py).

Each schema that compiles: the byte automaton accepts known-valid instances and rejects known-invalid ones,
and >= 100 random walks over it all validate with jsonschema. What stays unsupported is refused naming the
keyword (or the $ref and the bound) and its pointer.
"""

from __future__ import annotations

import json
import time

import pytest

from constraints import budget, refs
from constraints.compile import section_regex
from constraints.schema_regex import UnsupportedSchema, schema_to_regex, strict_validator, translate_schema
from constraints.unions import exclusive
from constraints.vocab_bytes import token_bytes
from constraints.walks import byte_accepts as accepts
from jobs.cmd_check_schema import check_one
from tests.constraints.conftest import assert_walks_valid


def assert_sound(schema, regex: str, n: int = 100, seed: int = 0) -> None:
    assert_walks_valid(schema, n, seed=seed, regex=regex)


def chain(n: int) -> dict:
    """n definitions, each an object holding the next: deep nesting, no recursion."""
    defs = {f"d{i}": {"type": "object", "properties": {"x": {"$ref": f"#/$defs/d{i + 1}"}}} for i in range(n)}
    defs[f"d{n}"] = {"type": "integer", "minimum": 0, "maximum": 9}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


NODE = {
    "type": "object",
    "properties": {
        "v": {"type": "integer", "minimum": 0, "maximum": 9},
        "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2},
    },
    "required": ["v"],
    "additionalProperties": False,
}
TREE = {"$defs": {"node": NODE}, "$ref": "#/$defs/node"}
LIST = {  # a linked list: next is null or another cell
    "$defs": {
        "cell": {
            "type": "object",
            "properties": {
                "v": {"type": "boolean"},
                "next": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/cell"}]},
            },
            "required": ["v", "next"],
            "additionalProperties": False,
        }
    },
    "$ref": "#/$defs/cell",
}


def nested(levels: int) -> str:
    """A TREE instance `levels` nodes deep."""
    return '{"v":1}' if levels == 1 else '{"v":1,"kids":[' + nested(levels - 1) + "]}"


# --- $ref: nesting is not recursion -----------------------------------------------------------------------
def test_deep_acyclic_refs_compile_and_validate():
    schema = chain(14)  # refused before issue 24 as "$ref recursion deeper than 8"
    rx = schema_to_regex(schema)
    deep = '{"x":' * 14 + "7" + "}" * 14
    assert accepts(rx, deep)
    assert not accepts(rx, '{"x":' * 14 + "12" + "}" * 14)  # the leaf's maximum still holds
    assert_sound(schema, rx)


def test_a_ref_is_a_percent_encoded_json_pointer():
    # JsonSchemaStore's dss-2.0.0 names "#/definitions/dss2-SigningTimeInfoType%3ASigningTimeBoundaries"
    schema = {"definitions": {"a:b": {"type": "integer", "maximum": 9}, "c/d~": {"const": "x"}},
              "type": "object", "required": ["p", "q"],
              "properties": {"p": {"$ref": "#/definitions/a%3Ab"}, "q": {"$ref": "#/definitions/c~1d~0"}}}
    rx = schema_to_regex(schema)
    assert accepts(rx, '{"p":7,"q":"x"}') and not accepts(rx, '{"p":12,"q":"x"}')
    assert_sound(schema, rx)


def dag(levels: int, leaf: dict) -> dict:
    """Definitions d0..d{levels}: each object refers to the next twice (a DAG, no recursion), then `leaf`."""
    defs = {f"d{i}": {"type": "object", "properties": {"a": {"$ref": f"#/$defs/d{i + 1}"},
                                                       "b": {"$ref": f"#/$defs/d{i + 1}"}}}
            for i in range(levels)}
    return {"$defs": {**defs, f"d{levels}": leaf}, "$ref": "#/$defs/d0"}


def test_shared_definition_is_translated_once_per_recursion_state():
    """A DAG: each level refers to the next twice. Memoised, it compiles; its regex is linear in depth."""
    schema = dag(6, {"type": "boolean"})
    rx = schema_to_regex(schema)
    assert accepts(rx, '{"a":{},"b":{"a":{"b":{"a":{"a":{"b":true}}}}}}')
    assert not accepts(rx, '{"a":{"a":{"a":{"a":{"a":{"a":1}}}}}}')
    assert_sound(schema, rx)


# --- $ref: recursion is unrolled to the bound, then only terminating choices ------------------------------
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_recursive_tree_unrolls_to_the_bound(depth):
    rx = schema_to_regex(TREE, ref_depth=depth)
    assert accepts(rx, nested(depth))
    assert not accepts(rx, nested(depth + 1))  # valid, but past the bound: not generated (a subset)
    assert not accepts(rx, '{"v":1,"kids":[{"kids":[]}]}')  # a kid without its required v
    assert not accepts(rx, '{"v":1,"w":2}')  # additionalProperties false
    assert_sound(TREE, rx, seed=depth)


def test_linked_list_ends_with_the_non_recursive_branch():
    rx = schema_to_regex(LIST, ref_depth=2)
    assert accepts(rx, '{"v":true,"next":{"v":false,"next":null}}')
    assert not accepts(rx, '{"v":true,"next":{"v":false,"next":{"v":true,"next":null}}}')  # past the bound
    assert not accepts(rx, '{"v":true}')  # next is required
    assert_sound(LIST, rx)


def test_default_depth_is_refs_constant():
    rx = schema_to_regex(TREE)
    assert accepts(rx, nested(refs.REF_DEPTH)) and not accepts(rx, nested(refs.REF_DEPTH + 1))


def test_recursion_in_an_optional_property_through_allof_compiles():
    """Was refused (test_soundness_shapes RECURSIVE allOf_ref_in_property): next is optional, so it ends."""
    schema = {
        "$defs": {"n": {"type": "object", "properties": {"next": {"allOf": [{"$ref": "#/$defs/n"}]}}}},
        "$ref": "#/$defs/n",
    }
    rx = schema_to_regex(schema)
    assert accepts(rx, '{"next":{"next":{}}}')
    assert not accepts(rx, '{"next":1}')
    assert_sound(schema, rx)


@pytest.mark.parametrize(
    "schema,ref",
    [
        (  # every n needs a next n: no finite instance, so no terminating choice at any bound
            {
                "$defs": {
                    "n": {
                        "type": "object",
                        "properties": {"next": {"$ref": "#/$defs/n"}},
                        "required": ["next"],
                    }
                },
                "$ref": "#/$defs/n",
            },
            "#/$defs/n",
        ),
        ({"$defs": {"n": {"allOf": [{"$ref": "#/$defs/n"}]}}, "$ref": "#/$defs/n"}, "#/$defs/n"),
        (
            {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
            "#/$defs/a",
        ),
    ],
)
def test_recursion_without_a_terminating_choice_is_refused_naming_ref_and_bound(schema, ref):
    with pytest.raises(UnsupportedSchema, match=r"^unsupported: \$ref recursion deeper than 2 ") as err:
        schema_to_regex(schema, ref_depth=2)
    assert f"for '{ref}'" in str(err.value) and "(at #" in str(err.value)


def test_large_unrolling_lowers_the_default_depth_or_refuses(monkeypatch):
    """Each level holds four recursive slots: the regex grows ~4x per level; the default depth shrinks."""
    slots = {k: {"$ref": "#/$defs/t"} for k in "abcd"}
    schema = {
        "$defs": {"t": {"type": "object", "properties": slots, "additionalProperties": False}},
        "$ref": "#/$defs/t",
    }
    full = schema_to_regex(schema, ref_depth=3)
    monkeypatch.setattr(refs, "REGEX_BUDGET", len(full) - 1)
    lowered = schema_to_regex(schema)  # depth 3 is over the budget: depth 2 is used
    assert lowered == schema_to_regex(schema, ref_depth=2)
    assert accepts(lowered, '{"a":{},"d":{}}') and not accepts(lowered, '{"a":{"b":{}}}')
    assert_sound(schema, lowered)
    with pytest.raises(UnsupportedSchema, match=r"\$ref '#/\$defs/t' expands to a regex over .* ref depth 3"):
        schema_to_regex(schema, ref_depth=3)  # an explicit depth is used as given
    monkeypatch.setattr(refs, "REGEX_BUDGET", 3)  # even the depth-1 regex (an empty object) is over
    with pytest.raises(UnsupportedSchema, match=r"expands to a regex over 3 characters .* ref depth 1"):
        schema_to_regex(schema)


def test_an_optional_property_too_large_to_compile_is_left_out_and_named(monkeypatch):
    # WashingtonPost's credits: an optional property whose value alone is over the budget at every depth
    big = {"type": "object", "properties": {k: {"type": "string", "maxLength": 8} for k in "abcdefgh"}}
    schema = {"type": "object", "required": ["id"],
              "properties": {"id": {"type": "integer"}, "credits": {"$ref": "#/$defs/big"}},
              "$defs": {"big": big}}
    assert translate_schema(schema).left_out == ()
    monkeypatch.setattr(refs, "REGEX_BUDGET", len(schema_to_regex(big)) - 1)
    got = translate_schema(schema)
    assert got.left_out == (f"#/properties/credits: $ref '#/$defs/big' regex of {len(schema_to_regex(big))} "
                            "characters",)
    assert accepts(got.regex, '{"id":7}') and not accepts(got.regex, '{"id":7,"credits":{}}')
    assert_sound(schema, got.regex)
    required = {**schema, "required": ["id", "credits"]}  # a required one is still refused, naming the $ref
    with pytest.raises(UnsupportedSchema, match=r"\$ref '#/\$defs/big' expands to a regex over"):
        translate_schema(required)
    with pytest.warns(UserWarning, match="never generated.*#/properties/credits"):  # a job's compile says so
        section_regex({"json_schema": schema})


@pytest.mark.parametrize("kw", ["anyOf", "oneOf"])
def test_a_union_branch_too_large_to_compile_is_left_out_and_named(monkeypatch, kw):
    # Github_ultra's o38670: an anyOf branch whose required part alone is over the budget
    big = {"type": "object", "required": list("abcdefgh"),
           "properties": {k: {"type": "string", "maxLength": 8} for k in "abcdefgh"}}
    small = {"type": "integer", "maximum": 9}
    schema = {"type": "object", "required": ["v"], "properties": {"v": {kw: [big, small]}}}
    monkeypatch.setattr(budget, "MAX_REGEX_CHARS", len(schema_to_regex(big)) - 1)
    got = translate_schema(schema)
    assert [w.split(":")[0] for w in got.left_out] == [f"#/properties/v/{kw}/0"]
    assert accepts(got.regex, '{"v":7}') and not accepts(got.regex, '{"v":{}}')
    assert_sound(schema, got.regex)
    monkeypatch.setattr(budget, "MAX_REGEX_CHARS", 3)  # every branch too large: refused, naming one
    with pytest.raises(UnsupportedSchema, match="too large to compile"):
        translate_schema(schema)


def test_exponential_dag_leaves_out_its_deep_levels_quickly_not_hung():
    """40 levels, each referring to the next twice: 2^40 copies unmemoised. Every level is optional, so the
    levels too large to compile are left out (named), not the schema refused; a required chain is refused."""
    schema = dag(40, {"type": "null"})
    t0 = time.perf_counter()
    got = translate_schema(schema)
    assert time.perf_counter() - t0 < 60  # generous: shared CPUs; unmemoised this never ends
    assert got.left_out and all(w.startswith("#/$ref/properties/") and "too large to compile" in w
                                for w in got.left_out)
    kept = [k for k in "ab" if accepts(got.regex, f'{{"{k}":{{}}}}')]
    assert kept and accepts(got.regex, "{}") and not accepts(got.regex, '{"c":{}}')
    required = dag(40, {"type": "null"})
    for d in required["$defs"].values():
        d["required"] = ["a", "b"]
    with pytest.raises(UnsupportedSchema, match=r"too large to compile"):  # refs.py's budget or the bound
        schema_to_regex(required)
    assert time.perf_counter() - t0 < 120


def test_check_schema_ref_depth_option(gemma_tok):
    vocab = token_bytes(gemma_tok)
    for depth in (1, 3):
        res = check_one(TREE, vocab, [1], max_new_tokens=256, canvas_length=32, seed=depth, ref_depth=depth)
        assert res["supported"] and res["valid"], res
    res = check_one(LIST, vocab, [1], max_new_tokens=256, canvas_length=32, seed=0, ref_depth=0)
    assert not res["supported"] and "ref depth" in res["error"]


# --- anyOf: overlap is fine -------------------------------------------------------------------------------
def test_overlapping_anyof_with_parent_keywords():
    schema = {"type": "integer", "minimum": 0, "anyOf": [{"maximum": 50}, {"exclusiveMinimum": 10}]}
    rx = schema_to_regex(schema)  # was "anyOf (branches not provably exclusive)"
    for good in ("0", "30", "2000"):
        assert accepts(rx, good), good
    assert not accepts(rx, "-1") and not accepts(rx, "1.5")
    assert_sound(schema, rx)


def test_overlapping_anyof_of_objects_with_parent():
    schema = {
        "type": "object",
        "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 99}},
        "additionalProperties": False,
        "anyOf": [
            {"properties": {"id": {"exclusiveMaximum": 10}}, "required": ["id"], "$comment": "small ids"},
            {"properties": {"id": {"exclusiveMinimum": 4}}},
        ],
    }
    rx = schema_to_regex(schema)
    assert accepts(rx, '{"id":7}') and accepts(rx, '{"id":60}') and accepts(rx, "{}")
    assert not accepts(rx, '{"id":100}') and not accepts(rx, '{"x":1}')
    assert_sound(schema, rx)


# --- oneOf: exclusive when a discriminator or the kinds say so, else narrowed with `not` ------------------
def test_oneof_discriminated_by_property_type():
    schema = {
        "oneOf": [
            {"type": "object", "properties": {"v": {"type": "string", "maxLength": 3}}, "required": ["v"]},
            {"type": "object", "properties": {"v": {"type": "integer"}}, "required": ["v"]},
        ]
    }
    rx = schema_to_regex(schema)  # was "oneOf (branches may overlap)"
    assert accepts(rx, '{"v":"ab"}') and accepts(rx, '{"v":12}')
    assert not accepts(rx, '{"v":true}') and not accepts(rx, "{}")
    assert_sound(schema, rx)


def test_oneof_of_refs_discriminated_by_const_with_parent():
    kind = {"type": "string"}
    schema = {
        "$defs": {
            "circle": {
                "properties": {"kind": {"const": "circle"}, "r": {"type": "number"}},
                "required": ["kind", "r"],
                "$comment": "a keyword object_combinators.py does not read: unions.py proves exclusivity",
            },
            "square": {
                "properties": {"kind": {"enum": ["square", "box"]}, "side": {"type": "integer"}},
                "required": ["kind"],
            },
        },
        "type": "object",
        "properties": {"kind": kind},
        "oneOf": [{"$ref": "#/$defs/circle"}, {"$ref": "#/$defs/square"}],
    }
    rx = schema_to_regex(schema)
    assert accepts(rx, '{"kind":"circle","r":1.5}') and accepts(rx, '{"kind":"box"}')
    assert not accepts(rx, '{"kind":"circle"}') and not accepts(rx, '{"kind":"oval"}')
    assert_sound(schema, rx)


def test_oneof_kinds_through_a_nested_anyof():
    schema = {
        "$defs": {"flag": {"anyOf": [{"type": "boolean"}, {"type": "string", "maxLength": 2}]}},
        "oneOf": [{"$ref": "#/$defs/flag"}, {"type": "array", "items": {"type": "null"}, "maxItems": 2}],
    }
    rx = schema_to_regex(schema)
    assert accepts(rx, "true") and accepts(rx, '"ab"') and accepts(rx, "[null]")
    assert not accepts(rx, "1") and not accepts(rx, '"abc"')
    assert_sound(schema, rx)


OVERLAP_P = {  # {} is an object of both branches; narrowed, branch a holds a non-string b and vice versa
    "type": "object",
    "properties": {
        "p": {
            "oneOf": [
                {"type": "object", "properties": {"a": {"type": "string"}}, "$comment": "x"},
                {"type": "object", "properties": {"b": {"type": "string"}}, "$comment": "y"},
            ]
        }
    },
    "required": ["p"],
}


@pytest.mark.parametrize(
    "schema,good,bad",
    [
        (OVERLAP_P, ['{"p":{"a":"x","b":1}}', '{"p":{"b":"y","a":[]}}'], ['{"p":{}}', '{"p":{"a":"x"}}']),
        (
            {"type": "string", "oneOf": [{"maxLength": 3}, {"minLength": 2}]},
            ['"a"', '"abcd"'],
            ['"ab"', '"abc"'],
        ),
    ],
)
def test_overlapping_oneof_branches_are_narrowed_to_exactly_one(schema, good, bad):
    """Each branch gets `not` of the branches it may share values with (unions.py exclusive_branches)."""
    rx = schema_to_regex(schema)
    v = strict_validator(schema)
    for text in good:
        assert v.is_valid(json.loads(text)) and accepts(rx, text), text
    for text in bad:
        assert not v.is_valid(json.loads(text)) and not accepts(rx, text), text
    assert_sound(schema, rx)


@pytest.mark.parametrize(
    "schema,where",
    [
        ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, "#"),  # 1.5 is only a number: not written
        (
            {
                "type": "object",
                "properties": {"p": {"oneOf": [{"type": "string", "format": "email"}, {"type": "string"}]}},
            },
            "#/properties/p",
        ),
        ({"type": "string", "oneOf": [{"format": "date"}, {"format": "email"}]}, "#"),
    ],
)
def test_overlapping_oneof_is_refused_naming_the_pointer(schema, where):
    with pytest.raises(UnsupportedSchema, match=r"^unsupported: oneOf ") as err:
        schema_to_regex(schema)
    assert str(err.value).endswith(f"(at {where})")


def test_exclusive_is_json_equality_and_conservative():
    assert exclusive({}, {"const": True}, {"const": 1})  # true is not 1 in JSON
    assert not exclusive({}, {"enum": [1, 2]}, {"const": 1.0})  # 1.0 is 1
    assert not exclusive({}, {"minLength": 2}, {"type": "array"})  # an array validates minLength: overlap
    assert not exclusive({}, {"$ref": "#/nowhere"}, {"type": "null"})  # unknown: no proof
    closed = {"type": "object", "properties": {"a": {}}, "additionalProperties": False}
    assert exclusive({}, closed, {"type": "object", "required": ["b"]})
    patterned = {**closed, "patternProperties": {"^b": {}}}
    assert not exclusive({}, patterned, {"type": "object", "required": ["b"]})  # b matches the pattern


def test_job_spec_ref_depth_reaches_the_translator():
    """structured_output.ref_depth (pipeline/spec.py) is the bound the job's constraint is compiled with."""
    from constraints import as_section
    from constraints.compile import section_regex
    from pipeline.spec import StructuredOutputSpec

    shallow = section_regex(as_section(StructuredOutputSpec(json_schema=TREE, ref_depth=1)))[0]
    deep = section_regex(as_section(StructuredOutputSpec(json_schema=TREE, ref_depth=2)))[0]
    assert shallow == schema_to_regex(TREE, ref_depth=1) and deep == schema_to_regex(TREE, ref_depth=2)
    assert len(deep) > len(shallow)
    with pytest.raises(ValueError, match="ref_depth"):
        StructuredOutputSpec(json_schema=TREE, ref_depth=0)


FAN = {  # up to 16 kids per node: depth 3 is ~177k automaton states (over the guard), depth 2 fits
    "$defs": {"n": {"type": "object", "properties": {
        "a": {"type": "string", "maxLength": 30}, "b": {"type": "string", "maxLength": 30},
        "kids": {"type": "array", "items": {"$ref": "#/$defs/n"}, "maxItems": 16}},
        "required": ["a"], "additionalProperties": False}},
    "$ref": "#/$defs/n",
}


def test_state_guard_lowers_the_default_depth_of_a_recursive_schema():
    with pytest.raises(UnsupportedSchema, match="too large to compile"):
        schema_to_regex(FAN, ref_depth=3)  # an explicit depth is used as given
    rx = schema_to_regex(FAN)  # the default retries smaller depths when the state guard trips
    assert rx == schema_to_regex(FAN, ref_depth=2)
    assert accepts(rx, '{"a":"x","kids":[{"a":"y","kids":[]}]}')
    assert not accepts(rx, '{"a":"x","kids":[{"a":"y","kids":[{"a":"z"}]}]}')  # past depth 2
    assert_sound(FAN, rx)
    flat = {"type": "array", "items": {"type": "string", "maxLength": 60}, "maxItems": 16,
            "minItems": 16}  # too large with no recursion: refused at once, no retry changes it
    with pytest.raises(UnsupportedSchema, match="too large to compile"):
        schema_to_regex({"type": "object", "properties": {f"p{i}": flat for i in range(16)},
                         "required": [f"p{i}" for i in range(16)]})
