"""Schema translation: unsupported keywords are named; combinators and refs produce only valid JSON."""

from __future__ import annotations

import pytest

from constraints.schema_regex import UnsupportedSchema, schema_to_regex
from constraints.walks import byte_walks
from tests.constraints.conftest import assert_walks_valid


def samples(regex: str, n: int, seed: int = 0, max_len: int = 300) -> list[str]:
    """Random strings of the regex's language (constraints/walks.py, shared with check-schema)."""
    return byte_walks(regex, n, seed=seed, max_len=max_len)


def assert_all_valid(schema: dict, n: int = 40):
    assert_walks_valid(schema, n)


@pytest.mark.parametrize(
    "keyword,schema",
    [
        ("pattern", {"type": "string", "pattern": "^a(?=b)"}),
        ("multipleOf", {"type": "integer", "multipleOf": 3}),
        ("uniqueItems", {"type": "array", "items": {"type": "string"}, "uniqueItems": True, "minItems": 2}),
        ("patternProperties", {"type": "object", "patternProperties": {"(": {}}, "required": ["a"]}),
        ("if", {"if": {"format": "email"}, "then": False, "else": {"type": "string"}}),
        ("not", {"type": "string", "not": {"format": "email"}}),
        ("allOf with conflicting 'format'", {"allOf": [{"format": "date"}, {"format": "email"}]}),
    ],
)
def test_unsupported_keyword_is_named(keyword, schema):
    with pytest.raises(UnsupportedSchema, match=f"unsupported: {keyword}"):
        schema_to_regex(schema)


def test_objects_arrays_ranges_formats():
    assert_all_valid(
        {
            "type": "object",
            "properties": {
                "id": {"type": "integer", "minimum": -3, "maximum": 250},
                "name": {"type": "string", "minLength": 1, "maxLength": 6},
                "when": {"type": "string", "format": "date-time"},
                "price": {"type": "number", "exclusiveMinimum": 0, "maximum": 10},
                "tags": {
                    "type": "array",
                    "items": {"enum": ["a", "b", 3, None]},
                    "minItems": 1,
                    "maxItems": 3,
                },
                "child": {"type": "object", "properties": {"ok": {"type": "boolean"}}},
                "any": {},
            },
            "required": ["name", "tags"],
            "additionalProperties": False,
        }
    )


def test_function_call_oneof_and_dependencies():
    dims = {
        "base": {"type": "number"},
        "height": {"type": "number"},
        "length": {"type": "number"},
        "width": {"type": "number"},
        "radius": {"type": "number"},
    }
    assert_all_valid(
        {
            "type": "object",
            "properties": dims,
            "oneOf": [
                {"required": ["radius"]},
                {"required": ["length", "width"]},
                {"required": ["base", "height"]},
            ],
        }
    )
    assert_all_valid(
        {
            "type": "object",
            "properties": dims,
            "required": ["radius"],
            "oneOf": [
                {"not": {"required": ["base", "height"]}, "required": ["length", "width"]},
                {"not": {"required": ["length", "width"]}, "required": ["base", "height"]},
            ],
        }
    )
    assert_all_valid(
        {
            "type": "object",
            "properties": {"shape": {"type": "string"}, **dims},
            "required": ["shape"],
            "anyOf": [
                {"properties": {"shape": {"const": "circle"}}, "required": ["radius"]},
                {"properties": {"shape": {"const": "square"}}, "required": ["length"]},
            ],
        }
    )
    assert_all_valid(
        {
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
            "required": ["a"],
            "dependencies": {"a": ["b"]},
        }
    )


def test_overlapping_oneof_is_refused():
    with pytest.raises(UnsupportedSchema, match="unsupported: oneOf"):
        schema_to_regex({"oneOf": [{"type": "integer"}, {"type": "number"}]})


def test_pydantic_model_with_refs_and_optionals():
    from typing import Literal

    from pydantic import BaseModel, Field

    class Address(BaseModel):
        city: str = Field(max_length=8)
        zip: int = Field(ge=10000, le=99999)

    class Person(BaseModel):
        name: str = Field(min_length=1, max_length=5)
        age: int = Field(ge=0, le=120)
        kind: Literal["a", "b"]
        home: Address
        note: str | None = None

    rx = schema_to_regex(Person.model_json_schema())
    for text in samples(rx, 30, seed=3):
        Person.model_validate_json(text)
