"""unevaluatedProperties (constraints/unevaluated.py): `false` beside $ref / allOf parts that declare
properties, as JsonSchemaStore's discovery.schema.json uses it; every sampled output validates with the
2020-12 validator (which enforces the keyword), and what we cannot read exactly is refused by name."""

from __future__ import annotations

import pytest

from constraints.schema_regex import UnsupportedSchema, schema_to_regex
from constraints.walks import byte_accepts as accepts
from tests.constraints.conftest import assert_walks_valid

DRAFT = "https://json-schema.org/draft/2020-12/schema"
DEFS = {
    "common": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 5}},
               "required": ["name"]},
    "spec": {"properties": {"pip_url": {"type": "string", "maxLength": 5}}},
}


def plugin(**extra) -> dict:
    return {"$schema": DRAFT, "$defs": DEFS, "type": "object",
            "allOf": [{"$ref": "#/$defs/common"}, {"$ref": "#/$defs/spec"}], **extra}


def test_false_allows_exactly_the_keys_the_parts_declare():
    schema = plugin(unevaluatedProperties=False)
    rx = schema_to_regex(schema)
    assert accepts(rx, '{"name":"a","pip_url":"b"}') and accepts(rx, '{"name":"a"}')
    assert not accepts(rx, '{"name":"a","x":1}')
    values = assert_walks_valid(schema, 60)
    assert {"pip_url"} <= {k for v in values for k in v}  # optional declared keys are still generated


def test_a_part_with_additional_properties_evaluates_the_other_keys():
    schema = plugin(unevaluatedProperties=False)
    rest = {"properties": {"name": True, "pip_url": True},
            "additionalProperties": {"type": "integer", "maximum": 9}}
    schema["allOf"] = [*schema["allOf"], rest]
    schema["required"] = ["extra"]  # declared by no part: only the additionalProperties part evaluates it
    rx = schema_to_regex(schema)
    assert accepts(rx, '{"name":"a","extra":3}') and not accepts(rx, '{"name":"a","extra":"s"}')
    assert all(v["extra"] <= 9 for v in assert_walks_valid(schema, 40))


def test_a_required_key_no_part_evaluates_is_refused():
    with pytest.raises(UnsupportedSchema, match="'extra' forbidden by additionalProperties"):
        schema_to_regex(plugin(unevaluatedProperties=False, required=["extra"]))


def test_true_says_nothing():
    assert schema_to_regex(plugin(unevaluatedProperties=True)) == schema_to_regex(plugin())


@pytest.mark.parametrize("extra,why", [
    ({"anyOf": [{"properties": {"a": {"type": "integer"}}}, {"properties": {"b": {"type": "integer"}}}]},
     r"unevaluatedProperties beside anyOf \(at #/anyOf\)"),
    ({"dependentSchemas": {"name": {"properties": {"a": {"type": "integer"}}}}},
     r"unevaluatedProperties beside dependentSchemas"),
    ({"unevaluatedProperties": {"type": "integer"}}, r"unevaluatedProperties with a schema \(at #\)"),
])
def test_what_evaluates_only_in_a_branch_is_refused_by_name(extra, why):
    schema = {"unevaluatedProperties": False, **plugin(), **extra}
    with pytest.raises(UnsupportedSchema, match=why):
        schema_to_regex(schema)
