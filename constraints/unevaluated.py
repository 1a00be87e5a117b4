"""`unevaluatedProperties` (draft 2019-09 / 2020-12), rewritten into keywords the translation already has.

An object key is "evaluated" when `properties`, `patternProperties` or `additionalProperties` of the schema,
or of a subschema applied to the same object that validates, covered it
(https://json-schema.org/understanding-json-schema/reference/object#unevaluatedproperties). We accept the
shape real schemas use: `unevaluatedProperties: false` beside `$ref` / `allOf` parts that only declare
properties. Every part holds (allOf), so every key a part declares is evaluated, and the parts are merged
as allOf is (all_of.py: a key no part declares gets the conjunction of the parts' additionalProperties).
Such a key is evaluated only when some part has `additionalProperties`; without one it is forbidden here
(additionalProperties: false on the merge). Branching applicators (anyOf, oneOf, if/then/else, schema
dependencies) evaluate keys only in the branch that validates: beside them the keyword is refused by name,
as is a schema other than true/false.
"""

from __future__ import annotations

from constraints.all_of import merge_conjuncts
from constraints.schema_errors import UnsupportedSchema

# what evaluates keys only in the branch that validates (or, a part's own, per part)
_BRANCHING = ("anyOf", "oneOf", "if", "then", "else", "dependentSchemas", "unevaluatedProperties")


def without_unevaluated(tr, s: dict, path: str, depth: int) -> dict:
    """`s` with its unevaluatedProperties rewritten (tr: schema_regex.py's translator)."""
    up = s["unevaluatedProperties"]
    rest = {k: v for k, v in s.items() if k != "unevaluatedProperties"}
    if up is True or up == {}:
        return rest  # every key may be unevaluated: the keyword says nothing
    if up is not False:
        raise UnsupportedSchema(f"unsupported: unevaluatedProperties with a schema (at {path})")
    parts = tr.conjuncts(rest, path, depth)
    for where, part in parts:
        deps = part.get("dependencies", {})
        schema_deps = ["dependencies"] if any(not isinstance(d, list) for d in deps.values()) else []
        for key in [*_BRANCHING, *schema_deps]:
            if key in part:
                raise UnsupportedSchema(
                    f"unsupported: unevaluatedProperties beside {key} (at {where}/{key})"
                )
    merged = merge_conjuncts(parts, path)
    merged.setdefault("additionalProperties", False)  # no part evaluates a key none declares
    return merged
