"""allOf (and $ref with sibling keywords): one schema that holds exactly when all the conjuncts hold.

schema_regex.py resolves the $refs and flattens nested allOf into (JSON pointer, schema) conjuncts; this
module merges them. Object keywords merge per object_keys.py (each part's additionalProperties governs the
keys the other parts declare); enum/const intersect; `type` intersects (an integer is also a number); any
other keyword must be equal across the parts, or the schema is refused.
"""

from __future__ import annotations

import copy

from constraints.object_keys import OBJECT_KEYS, is_forbidden, key_schema, merge_object_parts
from constraints.schema_errors import Unsatisfiable, UnsupportedSchema


def merge_conjuncts(parts: list[tuple[str, dict]], path: str) -> dict:
    """The merged schema of `parts` ((pointer, schema) pairs, none with allOf or $ref at its top)."""
    out: dict = {}
    for _, part in parts:
        for k, v in part.items():
            if k in OBJECT_KEYS:
                continue
            if k in ("enum", "const") and ("enum" in out or "const" in out):
                mine = [out.pop("const")] if "const" in out else out.pop("enum")
                theirs = [v] if k == "const" else list(v)
                out["enum"] = [x for x in mine if x in theirs]  # both must hold: intersect
            elif k == "type" and "type" in out:
                out["type"] = type_intersection(out["type"], v, path)
            elif k in out and out[k] != v:
                raise UnsupportedSchema(f"unsupported: allOf with conflicting {k!r} (at {path})")
            else:
                out[k] = copy.deepcopy(v)
    out.update(merge_object_parts([part for _, part in parts]))
    for key in out.get("required", []):  # name the part that forbids a required key
        for where, part in parts:
            if is_forbidden(key_schema(part, key)):
                kw = "properties/" + key if key in part.get("properties", {}) else "additionalProperties"
                raise Unsatisfiable(
                    f"unsupported: allOf: required property {key!r} forbidden by {kw.split('/')[0]} "
                    f"(no object validates) (at {where}/{kw})"
                )
    return out


def type_intersection(a, b, path: str):
    """The JSON types both `type` values allow (an integer is also a number)."""
    a, b = ([x] if isinstance(x, str) else list(x) for x in (a, b))
    both = [t for t in a if t in b]
    if ("integer" in a and "number" in b) or ("number" in a and "integer" in b):
        both.append("integer")
    both = list(dict.fromkeys(both))
    if not both:
        raise Unsatisfiable(f"unsupported: allOf with conflicting 'type', no value validates (at {path})")
    return both[0] if len(both) == 1 else both
