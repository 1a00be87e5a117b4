"""Which schema each key of an object must satisfy when several object schemas must all hold.

JSON Schema applies a schema's `additionalProperties` to every key outside that same schema's own
`properties`, whatever a sibling schema declares
(https://json-schema.org/understanding-json-schema/reference/object#additionalproperties). So under
`allOf: [{properties: {a: ...}, additionalProperties: false}, {properties: {b: ...}}]` the key b is forbidden
(it is additional for the first part), and a key one part declares must also satisfy every other part's
`additionalProperties` schema. The same rule decides a key's schema for an anyOf/oneOf branch and its parent
object (object_combinators.py) and for a required or dependency key that `properties` does not list
(schema_regex.py). Schemas here are returned as plain dicts: True or {} means unconstrained, False means
the key may not appear at all.
"""

from __future__ import annotations

from constraints.string_patterns import search_key

OBJECT_KEYS = ("properties", "required", "additionalProperties", "patternProperties")


def is_forbidden(v) -> bool:
    """True when no value validates against `v` (the key it governs must be absent)."""
    return v is False or (isinstance(v, dict) and v.get("not") == {})


def key_schema(part: dict, key: str):
    """The schema `part` imposes on the value of `key`: its own property schema and those of the
    patternProperties whose pattern matches the key, else (neither) additionalProperties."""
    props = part.get("properties", {})
    pp = part.get("patternProperties", {})
    matched = [v for p, v in pp.items() if search_key(p, key, "patternProperties")]
    if key in props:
        return conjoin([props[key], *matched]) if matched else props[key]
    if matched:
        return conjoin(matched)
    return part.get("additionalProperties", True)


def conjoin(schemas: list):
    """One schema that holds exactly when every one of `schemas` holds (False when any forbids the key)."""
    rest: list = []
    for v in schemas:
        if is_forbidden(v):
            return False
        if v is True or v == {} or v in rest:
            continue
        rest.append(v)
    if not rest:
        return {}
    return rest[0] if len(rest) == 1 else {"allOf": rest}


def merge_object_parts(parts: list[dict]) -> dict:
    """`properties`, `required` and `additionalProperties` of the conjunction of object schemas `parts`.

    Every key some part declares gets the conjunction of what each part says about it (its own property
    schema or its additionalProperties); keys no part declares get the conjunction of all the parts'
    additionalProperties. Keys keep the order in which the parts first declare them.
    """
    keys = list(dict.fromkeys(k for p in parts for k in p.get("properties", {})))
    patterned = any(p.get("patternProperties") for p in parts)
    if patterned:  # required keys get every part's say here; the merge keeps no patterns (see below)
        keys = list(dict.fromkeys(keys + [k for p in parts for k in p.get("required", [])]))
    out: dict = {}
    if keys:
        out["properties"] = {k: conjoin([key_schema(p, k) for p in parts]) for k in keys}
    required = list(dict.fromkeys(k for p in parts for k in p.get("required", [])))
    if required:
        out["required"] = required
    extra = [p["additionalProperties"] for p in parts if "additionalProperties" in p]
    if extra:
        out["additionalProperties"] = conjoin(extra)
    if patterned:  # an undeclared key's schema depends on which patterns match it: generate no such keys
        out["additionalProperties"] = False
    return out


def dependency_lists(s: dict) -> dict[str, list[str]]:
    """Key -> keys it makes required, from `dependencies` (array form) and `dependentRequired` together.

    Both keywords are unioned rather than one overriding the other: a validator of either draft may check
    either one. Schema-form `dependencies` entries are left out here (schema_regex.py refuses them).
    """
    out: dict[str, list[str]] = {}
    for kw in ("dependencies", "dependentRequired"):
        for key, dep in s.get(kw, {}).items():
            if isinstance(dep, list):
                out[key] = list(dict.fromkeys(out.get(key, []) + dep))
    return out


def close_required(required: list[str], deps: dict[str, list[str]]) -> list[str]:
    """`required` plus every key a present key's dependencies make required, transitively, in order."""
    out = list(dict.fromkeys(required))
    i = 0
    while i < len(out):
        for d in deps.get(out[i], []):
            if d not in out:
                out.append(d)
        i += 1
    return out
